//! Anytime-valid sequential decisions over bounded per-query scores.
//!
//! Feed scores one at a time to a [`SequentialTest`]; after each it holds a confidence sequence
//! (valid uniformly over time) for the mean clipped score and decides SAME (mean certified below
//! the tolerance gamma), DIFFERENT (certified above) or, at the mode's query cap, UNDECIDED.
//! The crate knows nothing about models: a score is a number in `[0, score_max]`.
//! docs/STATISTICS.md has the formulas, the citations and the measured query counts.

mod calibrate;
pub mod cs;
mod deployments;
mod path;
pub mod simulate;

pub use calibrate::{Calibration, DEFAULT_MARGIN, calibrate};
pub use cs::{ConfidenceSequence, Method};
pub use deployments::{Arm, DeploymentTest};
pub use path::{GAMMA_FLOOR, Path, PathTolerance};

/// Scores from text, one per line (blank lines and `#` comments skipped), with their 1-based
/// line numbers; the first line that is not a finite number is an error naming it. The format
/// of `pot decide --scores` and `pot calibrate --scores-out`.
pub fn parse_scores(text: &str) -> Result<Vec<(usize, f64)>, String> {
    let mut scores = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.parse::<f64>() {
            Ok(v) if v.is_finite() => scores.push((i + 1, v)),
            _ => return Err(format!("{}: `{line}` is not a number", i + 1)),
        }
    }
    if scores.is_empty() {
        return Err("the file holds no scores".into());
    }
    Ok(scores)
}

/// A preset: confidence level, tolerance and clipping, query bounds.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Mode {
    pub name: String,
    /// Error probability of a verdict (SAME or DIFFERENT), over the whole monitored run.
    pub alpha: f64,
    /// Tolerance on the mean clipped score: SAME certifies mean < gamma, DIFFERENT mean > gamma.
    pub gamma: f64,
    /// Scores are clipped to `[0, clip]` before entering the confidence sequence.
    pub clip: f64,
    /// No verdict before this many queries.
    pub n_min: u64,
    /// UNDECIDED when this many queries did not decide.
    pub n_max: u64,
    /// The tolerance setting `gamma` comes from: `default`, `quantized` or `custom`.
    #[serde(default = "default_tolerance_name")]
    pub tolerance: String,
}

fn default_tolerance_name() -> String {
    Tolerance::Default.name().into()
}

/// Default tolerance on the per-challenge score (mean total variation distance): above every
/// same-weights noise floor measured (encodings, backends, batch sizes, threads) and below the
/// smallest modification the detection table requires to be caught (docs/STATISTICS.md).
pub const DEFAULT_GAMMA: f64 = 0.016;

/// Tolerance for quantised deployments (Q8_0 / int8 copies of the same weights count as SAME);
/// docs/STATISTICS.md says what it still catches.
pub const QUANTIZED_GAMMA: f64 = 0.072;

/// A named tolerance setting, or a number.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Tolerance {
    /// Same weights up to storage and computation ([`DEFAULT_GAMMA`]).
    Default,
    /// Same weights up to 8-bit quantisation ([`QUANTIZED_GAMMA`]).
    Quantized,
    /// Anything else, e.g. what `pot calibrate` proposes.
    Custom(f64),
}

impl Tolerance {
    /// `default`, `quantized` (or `quantised`), or a number in (0, 0.5].
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "default" => Ok(Self::Default),
            "quantized" | "quantised" => Ok(Self::Quantized),
            other => match other.parse::<f64>() {
                Ok(g) if g > 0.0 && g <= 0.5 => Ok(Self::Custom(g)),
                _ => Err(format!(
                    "tolerance `{text}`: give default, quantized or a number in (0, 0.5]"
                )),
            },
        }
    }

    pub fn gamma(self) -> f64 {
        match self {
            Self::Default => DEFAULT_GAMMA,
            Self::Quantized => QUANTIZED_GAMMA,
            Self::Custom(g) => g,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Quantized => "quantized",
            Self::Custom(_) => "custom",
        }
    }
}

impl Mode {
    /// 97.5 % confidence, the fast gate.
    pub fn quick_gate() -> Self {
        Self::preset("QUICK_GATE", 0.025, 6, 48)
    }

    /// 99 % confidence.
    pub fn audit_grade() -> Self {
        Self::preset("AUDIT_GRADE", 0.01, 8, 96)
    }

    /// 99.9 % confidence.
    pub fn extended() -> Self {
        Self::preset("EXTENDED", 0.001, 12, 192)
    }

    fn preset(name: &str, alpha: f64, n_min: u64, n_max: u64) -> Self {
        Self {
            name: name.into(),
            alpha,
            gamma: DEFAULT_GAMMA,
            // gamma at half the clipped range: SAME and DIFFERENT are equally fast in clear cases.
            clip: 2.0 * DEFAULT_GAMMA,
            n_min,
            n_max,
            tolerance: default_tolerance_name(),
        }
    }

    pub fn all() -> [Mode; 3] {
        [Self::quick_gate(), Self::audit_grade(), Self::extended()]
    }

    /// `quick`, `audit`, `extended` (or the preset names, any case).
    pub fn by_name(name: &str) -> Option<Mode> {
        match name.to_ascii_lowercase().as_str() {
            "quick" | "quick_gate" => Some(Self::quick_gate()),
            "audit" | "audit_grade" => Some(Self::audit_grade()),
            "extended" => Some(Self::extended()),
            _ => None,
        }
    }

    pub fn confidence(&self) -> f64 {
        1.0 - self.alpha
    }

    /// Same preset with another tolerance; the clip follows (`2 gamma`).
    pub fn with_gamma(mut self, gamma: f64) -> Self {
        self.gamma = gamma;
        self.clip = 2.0 * gamma;
        self.tolerance = Tolerance::Custom(gamma).name().into();
        self
    }

    /// Same preset under a tolerance setting (gamma and the clip `2 gamma`).
    pub fn with_tolerance(self, tolerance: Tolerance) -> Self {
        let mut mode = self.with_gamma(tolerance.gamma());
        mode.tolerance = tolerance.name().into();
        mode
    }

    fn validate(&self, score_max: f64) -> Result<(), StatsError> {
        let bad = |reason: String| Err(StatsError::InvalidMode(reason));
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return bad(format!("alpha {} must lie in (0, 1)", self.alpha));
        }
        if !(self.clip > 0.0 && self.clip <= score_max) {
            return bad(format!(
                "clip {} must lie in (0, score_max = {score_max}]",
                self.clip
            ));
        }
        if !(self.gamma > 0.0 && self.gamma < self.clip) {
            return bad(format!(
                "gamma {} must lie in (0, clip = {})",
                self.gamma, self.clip
            ));
        }
        if self.n_min > self.n_max || self.n_max == 0 {
            return bad(format!(
                "need 0 < n_min ({}) <= n_max ({})",
                self.n_min, self.n_max
            ));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StatsError {
    #[error("score {value} is not a finite number")]
    NotFinite { value: f64 },
    #[error("score {value} lies outside the score range [0, {max}]")]
    OutOfRange { value: f64, max: f64 },
    #[error("invalid mode: {0}")]
    InvalidMode(String),
    #[error("the test already stopped with {0}; start a new test for more scores")]
    AlreadyStopped(Verdict),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Same,
    Different,
    Undecided,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Same => "SAME",
            Verdict::Different => "DIFFERENT",
            Verdict::Undecided => "UNDECIDED",
        })
    }
}

/// What to do after a score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Continue,
    Stop(Verdict),
}

/// Where the interval stands when the cap is reached without a verdict.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Diagnostic {
    /// Plain-language position of the interval relative to gamma.
    pub position: String,
    /// Distance from the running mean (clipped) to gamma; 0 means the data sit on the tolerance.
    pub gap_to_gamma: f64,
    /// Rough estimate of further queries a verdict would need if scores keep their current mean
    /// and spread (interval width shrinks like 1/sqrt(n)); `None` when the mean sits on gamma.
    pub estimated_more_queries: Option<u64>,
}

/// The state of a test: after any score, or final.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    /// `None` while the test continues.
    pub verdict: Option<Verdict>,
    pub mode: String,
    pub method: Method,
    pub alpha: f64,
    pub confidence: f64,
    pub gamma: f64,
    pub clip: f64,
    /// Queries used.
    pub n: u64,
    /// Mean of the raw scores: the estimated divergence, reported as the effect size.
    pub effect_size: f64,
    /// Mean of the clipped scores: the quantity the interval covers.
    pub mean_clipped: f64,
    /// Confidence-sequence bounds on the mean clipped score, in score units.
    pub ci_lower: f64,
    pub ci_upper: f64,
    pub diagnostic: Option<Diagnostic>,
}

/// One sequential test of "mean clipped score < gamma" against "> gamma".
#[derive(Clone, Debug)]
pub struct SequentialTest {
    mode: Mode,
    method: Method,
    score_max: f64,
    cs: ConfidenceSequence,
    n: u64,
    sum_raw: f64,
    sum_clipped: f64,
    verdict: Option<Verdict>,
}

impl SequentialTest {
    /// `score_max` is the largest value a score can take (1 for a total variation distance).
    pub fn new(mode: Mode, method: Method, score_max: f64) -> Result<Self, StatsError> {
        mode.validate(score_max)?;
        let threshold = mode.gamma / mode.clip;
        Ok(Self {
            cs: ConfidenceSequence::new(method, mode.alpha, &[threshold]),
            mode,
            method,
            score_max,
            n: 0,
            sum_raw: 0.0,
            sum_clipped: 0.0,
            verdict: None,
        })
    }

    /// Adds one score and says whether to continue. Scores outside `[0, score_max]` are errors,
    /// never clipped silently into range.
    pub fn push(&mut self, score: f64) -> Result<Step, StatsError> {
        if let Some(v) = self.verdict {
            return Err(StatsError::AlreadyStopped(v));
        }
        self.observe(score)?;
        if self.n >= self.mode.n_min {
            if self.certifies_below() {
                self.verdict = Some(Verdict::Same);
            } else if self.certifies_above() {
                self.verdict = Some(Verdict::Different);
            }
        }
        if self.verdict.is_none() && self.n >= self.mode.n_max {
            self.verdict = Some(Verdict::Undecided);
        }
        Ok(match self.verdict {
            Some(v) => Step::Stop(v),
            None => Step::Continue,
        })
    }

    /// Adds one score to the sums and the confidence sequence without deciding (a caller that
    /// decides over several tests: [`DeploymentTest`]).
    pub fn observe(&mut self, score: f64) -> Result<(), StatsError> {
        if !score.is_finite() {
            return Err(StatsError::NotFinite { value: score });
        }
        if !(0.0..=self.score_max).contains(&score) {
            return Err(StatsError::OutOfRange {
                value: score,
                max: self.score_max,
            });
        }
        let clipped = score.min(self.mode.clip);
        self.n += 1;
        self.sum_raw += score;
        self.sum_clipped += clipped;
        self.cs.observe(clipped / self.mode.clip);
        Ok(())
    }

    /// Whether the sequence certifies the mean clipped score below gamma (SAME's condition).
    pub fn certifies_below(&self) -> bool {
        self.cs.certifies_below(self.mode.gamma / self.mode.clip)
    }

    /// Whether the sequence certifies the mean clipped score above gamma (DIFFERENT's).
    pub fn certifies_above(&self) -> bool {
        self.cs.certifies_above(self.mode.gamma / self.mode.clip)
    }

    pub fn verdict(&self) -> Option<Verdict> {
        self.verdict
    }

    pub fn n(&self) -> u64 {
        self.n
    }

    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// The current state; a test stopped early or left running before the cap reports
    /// `verdict: None` and, like UNDECIDED, a diagnostic.
    pub fn outcome(&self) -> Outcome {
        let (lo, hi) = self.cs.interval();
        let clip = self.mode.clip;
        let n = self.n.max(1) as f64;
        let mean_clipped = self.sum_clipped / n;
        let (ci_lower, ci_upper) = (lo * clip, hi * clip);
        let diagnostic = match self.verdict {
            Some(Verdict::Same) | Some(Verdict::Different) => None,
            _ => Some(self.diagnose(mean_clipped, ci_lower, ci_upper)),
        };
        Outcome {
            verdict: self.verdict,
            mode: self.mode.name.clone(),
            method: self.method,
            alpha: self.mode.alpha,
            confidence: self.mode.confidence(),
            gamma: self.mode.gamma,
            clip,
            n: self.n,
            effect_size: if self.n == 0 { 0.0 } else { self.sum_raw / n },
            mean_clipped,
            ci_lower,
            ci_upper,
            diagnostic,
        }
    }

    fn diagnose(&self, mean: f64, lower: f64, upper: f64) -> Diagnostic {
        let gamma = self.mode.gamma;
        let gap = (mean - gamma).abs();
        let position = if upper < gamma {
            format!(
                "interval [{lower:.4}, {upper:.4}] lies below gamma {gamma} but n_min was not reached"
            )
        } else if lower > gamma {
            format!(
                "interval [{lower:.4}, {upper:.4}] lies above gamma {gamma} but n_min was not reached"
            )
        } else {
            let side = if mean < gamma { "below" } else { "above" };
            format!(
                "interval [{lower:.4}, {upper:.4}] still contains gamma {gamma}; the mean {mean:.4} is {side} it"
            )
        };
        // The half-width shrinks roughly like 1/sqrt(n): a verdict needs half-width < gap.
        let half_width = (upper - lower) / 2.0;
        let estimated_more_queries = (gap > 1e-12 && self.n > 0).then(|| {
            let needed = self.n as f64 * (half_width / gap).powi(2);
            (needed - self.n as f64).max(1.0).ceil() as u64
        });
        Diagnostic {
            position,
            gap_to_gamma: gap,
            estimated_more_queries,
        }
    }
}

/// Runs a whole score sequence; stops at the first verdict. Returns the outcome and how many of
/// the scores were used.
pub fn run_sequence(
    mode: &Mode,
    method: Method,
    score_max: f64,
    scores: &[f64],
) -> Result<Outcome, StatsError> {
    let mut test = SequentialTest::new(mode.clone(), method, score_max)?;
    for &s in scores {
        if let Step::Stop(_) = test.push(s)? {
            break;
        }
    }
    Ok(test.outcome())
}

/// Smallest n at which a constant stream of `score` reaches a verdict (None if not by n_max).
pub fn queries_to_verdict(mode: &Mode, method: Method, score: f64) -> Option<(u64, Verdict)> {
    let mut test = SequentialTest::new(mode.clone(), method, mode.clip.max(score)).ok()?;
    for _ in 0..mode.n_max {
        if let Ok(Step::Stop(v)) = test.push(score) {
            return Some((test.n(), v));
        }
    }
    None
}
