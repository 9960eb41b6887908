//! Proposing the tolerance gamma from scores of pairs known to be the same model.

/// A proposed tolerance and the noise it was derived from.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Calibration {
    pub n: usize,
    pub noise_mean: f64,
    pub noise_sd: f64,
    pub noise_max: f64,
    /// `margin * max(noise_max, noise_mean + 3 noise_sd)`.
    pub gamma: f64,
    pub margin: f64,
}

/// Default safety factor between the largest observed same-model noise and gamma.
pub const DEFAULT_MARGIN: f64 = 3.0;

/// Proposes gamma = `margin` x max(largest noise score, mean + 3 sd). With gamma at least three
/// times the worst observed same-model score, a SAME pair's scores sit in the lower third of
/// [0, gamma] and decide SAME at nearly the clear-case speed. Returns `None` for no scores.
pub fn calibrate(same_scores: &[f64], margin: f64) -> Option<Calibration> {
    if same_scores.is_empty() || same_scores.iter().any(|s| !s.is_finite()) {
        return None;
    }
    let n = same_scores.len();
    let mean = same_scores.iter().sum::<f64>() / n as f64;
    let var = same_scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n as f64;
    let sd = var.sqrt();
    let max = same_scores.iter().copied().fold(0.0, f64::max);
    let gamma = margin * max.max(mean + 3.0 * sd);
    Some(Calibration {
        n,
        noise_mean: mean,
        noise_sd: sd,
        noise_max: max,
        gamma,
        margin,
    })
}
