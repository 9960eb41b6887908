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

/// Default safety factor between the observed same-weights noise and gamma: the rule behind
/// the default and quantized tolerances too (docs/STATISTICS.md). With gamma 2.5 times the
/// worst noise, a same-weights pair's scores sit below 0.4 gamma (0.2 of the clipped range) and
/// decide SAME within a few queries of the clear case.
pub const DEFAULT_MARGIN: f64 = 2.5;

/// Proposes gamma = `margin` x max(largest noise score, mean + 3 sd). Returns `None` for no
/// scores.
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
