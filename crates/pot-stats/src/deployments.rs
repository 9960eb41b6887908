//! One candidate against several deployments of the reference (the same weights stored,
//! quantised or computed differently), each with its own tolerance: SAME names the deployment
//! that explains the candidate, DIFFERENT says none does.
//!
//! The error rate stays at `alpha` over the whole set (docs/STATISTICS.md, "Several
//! deployments"): each of the `m` deployments has its own confidence sequence at level
//! `alpha / m`, so by the union bound all `m` intervals hold at once, at every query, with
//! probability at least `1 - alpha`, and every decision is read from them:
//! - **SAME(d)**: deployment `d`'s interval lies below its `gamma_d`;
//! - **DIFFERENT**: every deployment's interval lies above its `gamma_d`;
//! - **UNDECIDED** at the query cap otherwise.
//!
//! A wrong verdict of either kind needs some interval to miss its mean: P <= alpha. With one
//! deployment this is [`SequentialTest`] exactly.

use crate::{Diagnostic, Method, Mode, Outcome, SequentialTest, StatsError, Step, Verdict};

/// A deployment the candidate is tested against: a name for the report and its tolerance.
#[derive(Clone, Debug, PartialEq)]
pub struct Arm {
    pub name: String,
    pub gamma: f64,
}

/// The sequential test over several deployments (see the module doc).
#[derive(Clone, Debug)]
pub struct DeploymentTest {
    arms: Vec<ArmState>,
    mode: Mode,
    n: u64,
    verdict: Option<Verdict>,
    /// The deployment SAME named, or the closest one (lowest mean clipped score relative to its
    /// clip) for any other verdict.
    chosen: Option<usize>,
}

#[derive(Clone, Debug)]
struct ArmState {
    name: String,
    /// The deployment's tolerance and confidence sequence at level `alpha / m`.
    same: SequentialTest,
}

impl DeploymentTest {
    /// `mode` gives alpha, the query bounds and the method's settings; each arm's tolerance
    /// replaces the mode's (the clip follows, `2 gamma`).
    pub fn new(
        mode: &Mode,
        method: Method,
        score_max: f64,
        arms: &[Arm],
    ) -> Result<Self, StatsError> {
        if arms.is_empty() {
            return Err(StatsError::InvalidMode(
                "no deployment to test against".into(),
            ));
        }
        let m = arms.len() as f64;
        let states = arms
            .iter()
            .map(|arm| {
                let mut arm_mode = mode.clone().with_gamma(arm.gamma);
                arm_mode.tolerance = mode.tolerance.clone();
                arm_mode.alpha = mode.alpha / m;
                Ok(ArmState {
                    name: arm.name.clone(),
                    same: SequentialTest::new(arm_mode, method, score_max)?,
                })
            })
            .collect::<Result<Vec<_>, StatsError>>()?;
        Ok(Self {
            arms: states,
            mode: mode.clone(),
            n: 0,
            verdict: None,
            chosen: None,
        })
    }

    /// Adds one query's scores, one per deployment in the order given to [`Self::new`].
    pub fn push(&mut self, scores: &[f64]) -> Result<Step, StatsError> {
        if let Some(v) = self.verdict {
            return Err(StatsError::AlreadyStopped(v));
        }
        if scores.len() != self.arms.len() {
            return Err(StatsError::InvalidMode(format!(
                "{} scores for {} deployments",
                scores.len(),
                self.arms.len()
            )));
        }
        for (arm, &score) in self.arms.iter_mut().zip(scores) {
            // The arm's own test only accumulates: the verdict is decided here, over all arms.
            arm.same.observe(score)?;
        }
        self.n += 1;
        if self.n >= self.mode.n_min {
            let same: Vec<usize> = (0..self.arms.len())
                .filter(|&d| self.arms[d].same.certifies_below())
                .collect();
            if !same.is_empty() {
                self.verdict = Some(Verdict::Same);
                self.chosen = self.closest(&same);
            } else if self.arms.iter().all(|arm| arm.same.certifies_above()) {
                self.verdict = Some(Verdict::Different);
            }
        }
        if self.verdict.is_none() && self.n >= self.mode.n_max {
            self.verdict = Some(Verdict::Undecided);
        }
        if self.verdict != Some(Verdict::Same) {
            self.chosen = self.closest(&(0..self.arms.len()).collect::<Vec<_>>());
        }
        Ok(match self.verdict {
            Some(v) => Step::Stop(v),
            None => Step::Continue,
        })
    }

    /// Among `arms`, the one whose mean score is lowest relative to its tolerance (the raw mean:
    /// clipped means tie at the clip when every deployment is far off).
    fn closest(&self, arms: &[usize]) -> Option<usize> {
        arms.iter().copied().min_by(|&a, &b| {
            let rel = |d: usize| {
                let o = self.arms[d].same.outcome();
                o.effect_size / o.gamma
            };
            rel(a).total_cmp(&rel(b))
        })
    }

    pub fn verdict(&self) -> Option<Verdict> {
        self.verdict
    }

    pub fn n(&self) -> u64 {
        self.n
    }

    /// The deployment SAME named, or the closest one otherwise (`None` before any score).
    pub fn chosen(&self) -> Option<&str> {
        self.chosen.map(|d| self.arms[d].name.as_str())
    }

    /// [`Self::chosen`]'s position in the order given to [`Self::new`].
    pub fn chosen_index(&self) -> Option<usize> {
        self.chosen
    }

    /// The decision as one outcome: the chosen deployment's interval and tolerance with the
    /// overall verdict and the mode's alpha.
    pub fn outcome(&self) -> Outcome {
        let d = self.chosen.unwrap_or(0);
        let mut outcome = self.arms[d].same.outcome();
        outcome.verdict = self.verdict;
        outcome.alpha = self.mode.alpha;
        outcome.confidence = self.mode.confidence();
        outcome.mode = self.mode.name.clone();
        if matches!(self.verdict, Some(Verdict::Same | Verdict::Different)) {
            outcome.diagnostic = None;
        } else if outcome.diagnostic.is_none() {
            outcome.diagnostic = Some(Diagnostic {
                position: "no deployment is certified below its tolerance yet".into(),
                gap_to_gamma: (outcome.mean_clipped - outcome.gamma).abs(),
                estimated_more_queries: None,
            });
        }
        outcome
    }

    /// Every deployment's state, in order: its name and outcome (interval at `1 - alpha / m`,
    /// simultaneous over the deployments; the arm's own verdict where its interval decided).
    pub fn outcomes(&self) -> Vec<(String, Outcome)> {
        self.arms
            .iter()
            .map(|arm| {
                let mut outcome = arm.same.outcome();
                if self.n >= self.mode.n_min {
                    if arm.same.certifies_below() {
                        outcome.verdict = Some(Verdict::Same);
                    } else if arm.same.certifies_above() {
                        outcome.verdict = Some(Verdict::Different);
                    }
                }
                if outcome.verdict.is_some() {
                    outcome.diagnostic = None;
                }
                (arm.name.clone(), outcome)
            })
            .collect()
    }
}
