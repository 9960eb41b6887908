//! Rotary position embeddings: the inverse frequencies and the cos/sin scale a configuration
//! implies, for every RoPE scaling pot implements (Hugging Face transformers' `rope_type`s
//! `default`, `linear`, `llama3` and `yarn`; llama.cpp's `none`, `linear` and `yarn`).
//!
//! Pure arithmetic, no burn: the forward pass asks for [`RopeScaling::inverse_frequencies`] and
//! [`RopeScaling::attention_scaling`]; the formulas follow
//! `transformers/modeling_rope_utils.py` (transformers 5.x), cited per variant.

/// How the rotary frequencies are derived from `rope_theta`. Serialised with the effective values
/// (defaults resolved), so two configurations describing the same function serialise equally.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "rope_type", rename_all = "lowercase")]
pub enum RopeScaling {
    /// `inv_freq[i] = theta^(-2i/d)`.
    Default,
    /// Position interpolation: `inv_freq / factor`.
    Linear { factor: f64 },
    /// Llama 3.1's frequency-dependent interpolation (`_compute_llama3_parameters`).
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
    /// YaRN (`_compute_yarn_parameters`): a ramp between interpolated and extrapolated
    /// frequencies, and cos/sin scaled by `attention_factor`.
    Yarn {
        factor: f64,
        original_max_position_embeddings: usize,
        beta_fast: f64,
        beta_slow: f64,
        /// Resolved: `0.1 ln(factor) + 1` unless the config gives it (or `mscale`s).
        attention_factor: f64,
        /// Whether the correction range is rounded to whole dimensions (transformers' default).
        truncate: bool,
    },
}

impl RopeScaling {
    /// The name transformers gives this scaling.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Linear { .. } => "linear",
            Self::Llama3 { .. } => "llama3",
            Self::Yarn { .. } => "yarn",
        }
    }

    /// `head_dim / 2` inverse frequencies for base `theta`.
    pub fn inverse_frequencies(&self, theta: f64, head_dim: usize) -> Vec<f64> {
        let d = head_dim as f64;
        let base: Vec<f64> = (0..head_dim / 2)
            .map(|i| 1.0 / theta.powf(2.0 * i as f64 / d))
            .collect();
        match *self {
            Self::Default => base,
            Self::Linear { factor } => base.iter().map(|f| f / factor).collect(),
            Self::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let old = original_max_position_embeddings as f64;
                let low_freq_wavelen = old / low_freq_factor;
                let high_freq_wavelen = old / high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_freq_wavelen {
                            f
                        } else if wavelen > low_freq_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
            Self::Yarn {
                factor,
                original_max_position_embeddings,
                beta_fast,
                beta_slow,
                truncate,
                ..
            } => {
                let max_pos = original_max_position_embeddings as f64;
                let correction_dim = |rotations: f64| {
                    d * (max_pos / (rotations * 2.0 * std::f64::consts::PI)).ln()
                        / (2.0 * theta.ln())
                };
                let (mut low, mut high) = (correction_dim(beta_fast), correction_dim(beta_slow));
                if truncate {
                    (low, high) = (low.floor(), high.ceil());
                }
                let (low, mut high) = (low.max(0.0), high.min(d - 1.0));
                if low == high {
                    high += 0.001;
                }
                base.iter()
                    .enumerate()
                    .map(|(i, &extrapolated)| {
                        let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                        let extrapolation_weight = 1.0 - ramp;
                        let interpolated = extrapolated / factor;
                        interpolated * (1.0 - extrapolation_weight)
                            + extrapolated * extrapolation_weight
                    })
                    .collect()
            }
        }
    }

    /// Factor applied to cos and sin (YaRN's attention temperature; 1 otherwise).
    pub fn attention_scaling(&self) -> f64 {
        match *self {
            Self::Yarn {
                attention_factor, ..
            } => attention_factor,
            _ => 1.0,
        }
    }
}

/// YaRN's default attention factor, `get_mscale` in transformers.
pub fn yarn_mscale(scale: f64, mscale: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * mscale * scale.ln() + 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_divides_and_llama3_keeps_high_frequencies() {
        let base = RopeScaling::Default.inverse_frequencies(10_000.0, 64);
        let linear = RopeScaling::Linear { factor: 4.0 }.inverse_frequencies(10_000.0, 64);
        assert!((linear[5] * 4.0 - base[5]).abs() < 1e-15);
        let llama3 = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        }
        .inverse_frequencies(500_000.0, 64);
        let plain = RopeScaling::Default.inverse_frequencies(500_000.0, 64);
        // Short wavelengths unchanged, the longest divided by the factor.
        assert_eq!(llama3[0], plain[0]);
        assert!((llama3[31] * 8.0 - plain[31]).abs() < 1e-18);
    }
}
