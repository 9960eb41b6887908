//! Modified copies of a model, written as real model directories that pot (and transformers)
//! read like any other: the variant workshop behind the detection table (`cargo xtask
//! variants`, docs/STATISTICS.md) and the tests that check verdicts on modified models. Every
//! edit is deterministic given its seed.

use std::path::Path;

use half::f16;

use crate::convert::{OutputDType, convert_with};
use crate::error::Result;
use crate::model::Model;

/// One modification of every tensor's f32 values.
#[derive(Clone, Debug)]
pub enum Edit {
    /// Stored in another element type, values otherwise untouched.
    Encoding(OutputDType),
    /// Every matrix quantised to ggml's Q8_0 (blocks of 32, f16 scale) and back, stored as F32.
    Q8Roundtrip,
    /// `w *= 1 + sigma * N(0, 1)` on one tensor.
    Noise { tensor: String, sigma: f64 },
    /// `W += U V^T` (rank `rank`, Gaussian factors) scaled to `fraction` of `||W||_F`, on every
    /// layer's projections whose name ends with one of `targets`.
    LowRank {
        targets: Vec<String>,
        rank: usize,
        fraction: f64,
    },
}

/// The attention projections of every layer (internal name suffixes).
pub const ATTENTION: &[&str] = &[
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
];

/// The MLP projections of every layer.
pub const MLP: &[&str] = &[
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
];

/// SplitMix64 (the same generator as pot-stats' simulations): edits replay exactly anywhere.
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A seed from a variant's name, so adding variants never changes the others (FNV-1a).
pub fn seed_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Writes `model` with `edit` applied as a Hugging Face directory at `out` (which must not
/// exist; written atomically by [`convert_with`]).
pub fn write_variant(model: &Model, out: &Path, edit: &Edit, seed: u64) -> Result<()> {
    let dtype = match edit {
        Edit::Encoding(d) => *d,
        _ => OutputDType::F32,
    };
    let shapes: std::collections::HashMap<String, Vec<usize>> = model
        .tensors()
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect();
    let mut rng = SplitMix::new(seed);
    convert_with(
        model,
        out,
        dtype,
        |name, values| apply(edit, &mut rng, name, &shapes[name], values),
        |_, _| {},
    )
}

fn normal(rng: &mut SplitMix) -> f64 {
    // Box-Muller; 1 - u keeps the logarithm finite.
    let (u, v) = (1.0 - rng.uniform(), rng.uniform());
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

/// Applies `edit` to one tensor's values (`shape` row-major).
fn apply(edit: &Edit, rng: &mut SplitMix, name: &str, shape: &[usize], values: &mut [f32]) {
    match edit {
        Edit::Encoding(_) => {}
        Edit::Q8Roundtrip => {
            if shape.len() == 2 {
                q8_0_roundtrip(values);
            }
        }
        Edit::Noise { tensor, sigma } => {
            if name == tensor {
                for v in values.iter_mut() {
                    *v *= (1.0 + sigma * normal(rng)) as f32;
                }
            }
        }
        Edit::LowRank {
            targets,
            rank,
            fraction,
        } => {
            if shape.len() == 2 && targets.iter().any(|t| name.ends_with(t)) {
                add_low_rank(values, shape[0], shape[1], *rank, *fraction, rng);
            }
        }
    }
}

/// ggml's Q8_0: per block of 32, `d = max|x| / 127` stored as f16, `q = round(x / d)`.
pub fn q8_0_roundtrip(values: &mut [f32]) {
    for block in values.chunks_mut(32) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        let d16 = f16::from_f32(d).to_f32();
        for v in block.iter_mut() {
            *v = (*v * id).round().clamp(-127.0, 127.0) * d16;
        }
    }
}

/// `W += c U V^T` with Gaussian `U: rows x r`, `V: cols x r`, `c` such that
/// `||c U V^T||_F = fraction ||W||_F`.
pub fn add_low_rank(
    w: &mut [f32],
    rows: usize,
    cols: usize,
    r: usize,
    fraction: f64,
    rng: &mut SplitMix,
) {
    let u: Vec<f64> = (0..rows * r).map(|_| normal(rng)).collect();
    let v: Vec<f64> = (0..cols * r).map(|_| normal(rng)).collect();
    let gram = |m: &[f64], n: usize| {
        let mut g = vec![0.0; r * r];
        for i in 0..n {
            for a in 0..r {
                for b in 0..r {
                    g[a * r + b] += m[i * r + a] * m[i * r + b];
                }
            }
        }
        g
    };
    // ||U V^T||_F^2 = trace((U^T U)(V^T V)).
    let (gu, gv) = (gram(&u, rows), gram(&v, cols));
    let update_norm = (0..r)
        .flat_map(|a| (0..r).map(move |b| (a, b)))
        .map(|(a, b)| gu[a * r + b] * gv[b * r + a])
        .sum::<f64>()
        .sqrt();
    let w_norm = w.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    let c = fraction * w_norm / update_norm;
    for i in 0..rows {
        for j in 0..cols {
            let dot: f64 = (0..r).map(|k| u[i * r + k] * v[j * r + k]).sum();
            w[i * cols + j] += (c * dot) as f32;
        }
    }
}

/// Values per independently seeded chunk of [`random_values`]: generation is parallel and
/// still deterministic.
const CHUNK: usize = 1 << 20;

/// Deterministic random values of realistic scale for tensor `name` of `shape`: projections
/// uniform with standard deviation 1/sqrt(fan-in) (activations keep their size through the
/// blocks), norms 1, embedding rows of unit scale, the head scaled so logits spread by about 3
/// (peaked next-token distributions, as trained models have).
pub fn random_values(name: &str, shape: &[usize]) -> Vec<f32> {
    use rayon::prelude::*;
    let n: usize = shape.iter().product();
    let std = if name.ends_with("norm.weight") {
        return vec![1.0; n];
    } else if name == "model.embed_tokens.weight" {
        1.0
    } else if name == "lm_head.weight" {
        3.0 / (shape[1] as f64).sqrt()
    } else {
        1.0 / (shape[1] as f64).sqrt()
    };
    // Uniform on [-a, a] has standard deviation a / sqrt(3).
    let a = (std * 3f64.sqrt()) as f32;
    let seed = seed_of(name);
    let mut values = vec![0f32; n];
    values
        .par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let mut rng = SplitMix::new(seed ^ (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            for v in chunk {
                *v = a * (2.0 * rng.uniform() as f32 - 1.0);
            }
        });
    values
}

/// A model directory of `config`'s shape with [`random_values`] weights stored as `dtype`
/// (`edit` may change a tensor's values before it is written) and `tokenizer`: what `cargo
/// xtask bigmodel` and the mixture-of-experts streaming test run on. Written under
/// `<dir>.partial` and renamed, so an interrupted run leaves no half model at `dir`.
pub fn write_random_model(
    dir: &Path,
    config: &crate::ModelConfig,
    tokenizer: &crate::Tokenizer,
    dtype: OutputDType,
    written_by: &str,
    mut edit: impl FnMut(&str, &mut Vec<f32>),
) -> Result<()> {
    let io = |e: std::io::Error| crate::error::FormatError::io(dir, e);
    let staging = dir.with_extension("partial");
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io)?;
    }
    std::fs::create_dir_all(&staging).map_err(io)?;
    crate::convert::write_hf_metadata(&staging, config, tokenizer, dtype)?;
    let mut tensors = crate::model::expected_tensors(config);
    tensors.sort();
    crate::convert::write_safetensors(
        &staging.join("model.safetensors"),
        dtype,
        &tensors,
        written_by,
        |i, name| {
            let mut values = random_values(name, &tensors[i].1);
            edit(name, &mut values);
            Ok(values)
        },
    )?;
    std::fs::rename(&staging, dir).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_rank_update_has_the_asked_norm_and_q8_is_close() {
        let (rows, cols) = (24, 40);
        let mut rng = SplitMix::new(1);
        let w: Vec<f32> = (0..rows * cols).map(|_| normal(&mut rng) as f32).collect();
        let mut updated = w.clone();
        add_low_rank(&mut updated, rows, cols, 3, 0.02, &mut rng);
        let norm = |x: &[f32]| x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
        let diff: Vec<f32> = updated.iter().zip(&w).map(|(a, b)| a - b).collect();
        let ratio = norm(&diff) / norm(&w);
        assert!((ratio - 0.02).abs() < 1e-4, "{ratio}");
        let mut q = w.clone();
        q8_0_roundtrip(&mut q);
        let err: Vec<f32> = q.iter().zip(&w).map(|(a, b)| a - b).collect();
        assert!(norm(&err) / norm(&w) < 0.01);
    }
}
