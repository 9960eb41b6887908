//! Confidence sequences for the mean of observations in [0, 1], valid uniformly over time.
//!
//! Both methods follow Waudby-Smith & Ramdas (2023), "Estimating means of bounded random variables
//! by betting", JRSS-B 86(1): the predictable plug-in empirical-Bernstein CS (their Theorem 2) and
//! the hedged-capital betting CS (their Theorem 3 with the predictable plug-in bets of Section 5).
//! Formulas are in docs/STATISTICS.md.

/// Which confidence sequence to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Hedged-capital betting CS (the default: it decides sooner, see docs/STATISTICS.md).
    Betting,
    /// Predictable plug-in empirical-Bernstein CS.
    EmpiricalBernstein,
}

impl Method {
    pub const ALL: [Method; 2] = [Method::Betting, Method::EmpiricalBernstein];

    pub fn name(self) -> &'static str {
        match self {
            Method::Betting => "betting",
            Method::EmpiricalBernstein => "empirical-bernstein",
        }
    }
}

/// Truncation of the bets: WSR (2023) recommend 1/2 or 3/4; 3/4 decides clear cases sooner.
pub const BET_TRUNCATION: f64 = 0.75;

/// Number of grid cells over [0, 1] on which the betting CS is evaluated; interval ends are
/// rounded outward to this grid, so the reported interval always contains the exact one.
pub const GRID: usize = 2000;

/// The predictable plug-in state shared by both methods: running mean and variance estimates
/// with the prior mean 1/2 and prior variance 1/4 of WSR (2023), eq. (26).
#[derive(Clone, Debug)]
struct PlugIn {
    log_two_over_alpha: f64,
    t: u64,
    sum_x: f64,
    sum_sq_dev: f64,
}

impl PlugIn {
    fn new(alpha: f64) -> Self {
        Self {
            log_two_over_alpha: (2.0 / alpha).ln(),
            t: 0,
            sum_x: 0.0,
            sum_sq_dev: 0.0,
        }
    }

    /// mu_hat_{t} = (1/2 + sum x) / (t + 1)
    fn mean(&self) -> f64 {
        (0.5 + self.sum_x) / (self.t as f64 + 1.0)
    }

    /// sigma2_hat_{t} = (1/4 + sum (x_i - mu_hat_i)^2) / (t + 1)
    fn variance(&self) -> f64 {
        (0.25 + self.sum_sq_dev) / (self.t as f64 + 1.0)
    }

    /// The untruncated predictable bet for observation t + 1:
    /// sqrt(2 ln(2/alpha) / (sigma2_hat_t (t+1) ln(t+2))).
    fn bet(&self) -> f64 {
        let next = self.t as f64 + 1.0;
        (2.0 * self.log_two_over_alpha / (self.variance() * next * (next + 1.0).ln())).sqrt()
    }

    fn observe(&mut self, x: f64) {
        self.t += 1;
        self.sum_x += x;
        let mean = self.mean();
        self.sum_sq_dev += (x - mean) * (x - mean);
    }
}

/// A confidence sequence for the mean of [0,1]-valued observations.
#[derive(Clone, Debug)]
pub enum ConfidenceSequence {
    Betting(BettingCs),
    EmpiricalBernstein(EmpiricalBernsteinCs),
}

impl ConfidenceSequence {
    /// `thresholds` are means the caller will ask [`Self::certifies_below`] or
    /// [`Self::certifies_above`] about; the betting CS evaluates them exactly.
    pub fn new(method: Method, alpha: f64, thresholds: &[f64]) -> Self {
        match method {
            Method::Betting => Self::Betting(BettingCs::new(alpha, thresholds)),
            Method::EmpiricalBernstein => {
                Self::EmpiricalBernstein(EmpiricalBernsteinCs::new(alpha))
            }
        }
    }

    /// Adds one observation; `x` must lie in [0, 1].
    pub fn observe(&mut self, x: f64) {
        debug_assert!((0.0..=1.0).contains(&x), "observation {x} outside [0, 1]");
        match self {
            Self::Betting(cs) => cs.observe(x),
            Self::EmpiricalBernstein(cs) => cs.observe(x),
        }
    }

    /// The running intersection of all intervals so far: `(lower, upper)`, never wider than before.
    pub fn interval(&self) -> (f64, f64) {
        match self {
            Self::Betting(cs) => cs.interval(),
            Self::EmpiricalBernstein(cs) => cs.interval(),
        }
    }

    /// Whether the CS has excluded every mean at or above `m` (so the mean is certified below m).
    pub fn certifies_below(&self, m: f64) -> bool {
        match self {
            Self::Betting(cs) => cs.certifies_below(m),
            Self::EmpiricalBernstein(cs) => cs.interval().1 < m,
        }
    }

    /// Whether the CS has excluded every mean at or below `m` (so the mean is certified above m).
    pub fn certifies_above(&self, m: f64) -> bool {
        match self {
            Self::Betting(cs) => cs.certifies_above(m),
            Self::EmpiricalBernstein(cs) => cs.interval().0 > m,
        }
    }
}

/// Predictable plug-in empirical-Bernstein CS (WSR 2023, Theorem 2):
/// `C_t = mu_t +- (ln(2/alpha) + sum v_i psi_E(lambda_i)) / sum lambda_i`, with
/// `mu_t = sum lambda_i x_i / sum lambda_i`, `v_i = 4 (x_i - mu_hat_{i-1})^2`,
/// `psi_E(l) = (-ln(1 - l) - l) / 4`, `lambda_i = min(bet_i, c)`.
#[derive(Clone, Debug)]
pub struct EmpiricalBernsteinCs {
    plug_in: PlugIn,
    sum_lambda: f64,
    sum_lambda_x: f64,
    sum_penalty: f64,
    lower: f64,
    upper: f64,
}

impl EmpiricalBernsteinCs {
    pub fn new(alpha: f64) -> Self {
        Self {
            plug_in: PlugIn::new(alpha),
            sum_lambda: 0.0,
            sum_lambda_x: 0.0,
            sum_penalty: 0.0,
            lower: 0.0,
            upper: 1.0,
        }
    }

    pub fn observe(&mut self, x: f64) {
        let lambda = self.plug_in.bet().min(BET_TRUNCATION);
        let v = 4.0 * (x - self.plug_in.mean()).powi(2);
        let psi = (-(1.0 - lambda).ln() - lambda) / 4.0;
        self.sum_lambda += lambda;
        self.sum_lambda_x += lambda * x;
        self.sum_penalty += v * psi;
        self.plug_in.observe(x);
        let centre = self.sum_lambda_x / self.sum_lambda;
        let half = (self.plug_in.log_two_over_alpha + self.sum_penalty) / self.sum_lambda;
        self.lower = self.lower.max(centre - half);
        self.upper = self.upper.min(centre + half);
    }

    pub fn interval(&self) -> (f64, f64) {
        (self.lower, self.upper.max(self.lower))
    }
}

/// Hedged-capital betting CS (WSR 2023, Theorem 3): for each candidate mean m,
/// `K_t(m) = max(theta K+_t(m), (1 - theta) K-_t(m))` with theta = 1/2,
/// `K+_t(m) = prod (1 + min(bet_i, c/m) (x_i - m))`, `K-_t(m) = prod (1 - min(bet_i, c/(1-m)) (x_i - m))`;
/// m leaves the CS, for good, once `K_t(m) >= 1/alpha` (Ville's inequality makes the running
/// intersection valid). Candidates are a grid of [`GRID`] cells plus the tolerances asked about.
#[derive(Clone, Debug)]
pub struct BettingCs {
    plug_in: PlugIn,
    log_threshold: f64,
    /// ln K+ and ln K- per candidate mean (grid points and thresholds), sorted by m.
    grid: Vec<Candidate>,
}

#[derive(Clone, Debug)]
struct Candidate {
    m: f64,
    log_up: f64,
    log_down: f64,
    /// Left the CS: K+ (mean above m) or K- (mean below m) reached 2/alpha at some time.
    excluded: bool,
}

impl BettingCs {
    pub fn new(alpha: f64, thresholds: &[f64]) -> Self {
        let mut points: Vec<f64> = (0..=GRID).map(|j| j as f64 / GRID as f64).collect();
        points.extend(
            thresholds
                .iter()
                .copied()
                .filter(|m| (0.0..=1.0).contains(m)),
        );
        points.sort_by(f64::total_cmp);
        points.dedup();
        Self {
            plug_in: PlugIn::new(alpha),
            // theta K >= 1/alpha  <=>  ln K >= ln(2/alpha) with theta = 1/2.
            log_threshold: (2.0 / alpha).ln(),
            grid: points
                .into_iter()
                .map(|m| Candidate {
                    m,
                    log_up: 0.0,
                    log_down: 0.0,
                    excluded: false,
                })
                .collect(),
        }
    }

    pub fn observe(&mut self, x: f64) {
        let bet = self.plug_in.bet();
        for c in self.grid.iter_mut().filter(|c| !c.excluded) {
            // At m = 0 (or 1) the cap c/m is infinite: x - m never has the losing sign there.
            let m = c.m;
            c.log_up += (1.0 + bet.min(BET_TRUNCATION / m) * (x - m)).ln();
            c.log_down += (1.0 - bet.min(BET_TRUNCATION / (1.0 - m)) * (x - m)).ln();
            c.excluded |= c.log_up >= self.log_threshold || c.log_down >= self.log_threshold;
        }
        self.plug_in.observe(x);
    }

    /// Outermost grid points not excluded; rounded outward by one cell.
    pub fn interval(&self) -> (f64, f64) {
        let alive = |c: &&Candidate| !c.excluded;
        let lower = self.grid.iter().find(alive).map(|c| c.m);
        let upper = self.grid.iter().rev().find(alive).map(|c| c.m);
        match (lower, upper) {
            (Some(l), Some(u)) => (
                (l - 1.0 / GRID as f64).max(0.0),
                (u + 1.0 / GRID as f64).min(1.0),
            ),
            // Every candidate excluded: only possible when the stream violates the assumptions;
            // report the last estimate as a degenerate interval rather than an empty one.
            _ => {
                let m = self.plug_in.mean();
                (m, m)
            }
        }
    }

    fn certifies_below(&self, m: f64) -> bool {
        self.grid.iter().filter(|c| c.m >= m).all(|c| c.excluded)
    }

    fn certifies_above(&self, m: f64) -> bool {
        self.grid.iter().filter(|c| c.m <= m).all(|c| c.excluded)
    }
}
