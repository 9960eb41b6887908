//! `cargo xtask variants`: modified copies of the SmolLM2 fixture, written as real model
//! directories that pot reads like any other, for the detection table (docs/STATISTICS.md).
//!
//! Same weights in other encodings (f32, f16, bf16, a Q8_0 round trip), multiplicative noise
//! on one tensor, low-rank updates of the attention or MLP projections at several norms, and
//! (with Python, torch and transformers, `fixtures/variants/requirements.txt`) real fine-tunes
//! and copies re-saved by transformers. Every variant is rebuilt from pinned seeds under
//! `$POT_FIXTURES/variants/`; nothing generated is committed.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use half::f16;
use pot_formats::Model;
use pot_formats::convert::{OutputDType, convert_with};
use pot_stats::simulate::Rng;

use crate::fixtures;

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
        targets: &'static [&'static str],
        rank: usize,
        fraction: f64,
    },
}

pub const ATTENTION: &[&str] = &[
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
];
pub const MLP: &[&str] = &[
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
];

/// A named variant and how it is made.
#[derive(Clone, Debug)]
pub struct Variant {
    pub name: String,
    pub edit: Edit,
    pub about: String,
}

/// The Rust-made variants of the detection table, in table order.
pub fn catalogue() -> Vec<Variant> {
    let mut out = vec![
        variant(
            "f32",
            Edit::Encoding(OutputDType::F32),
            "GGUF dequantised to F32 (pot convert)",
        ),
        variant(
            "f16",
            Edit::Encoding(OutputDType::F16),
            "the same weights stored as f16",
        ),
        variant(
            "bf16",
            Edit::Encoding(OutputDType::Bf16),
            "the same weights stored as bf16",
        ),
        variant(
            "q8_0",
            Edit::Q8Roundtrip,
            "every matrix quantised to Q8_0 and back (stored F32)",
        ),
    ];
    for sigma in [0.01, 0.05, 0.2] {
        out.push(variant(
            &format!("noise-l15-down-{}pct", pct(sigma)),
            Edit::Noise {
                tensor: "model.layers.15.mlp.down_proj.weight".into(),
                sigma,
            },
            &format!("layer 15 down_proj x (1 + {sigma} N(0,1))"),
        ));
    }
    for fraction in [0.005, 0.01, 0.02, 0.05, 0.1] {
        out.push(low_rank("attn", ATTENTION, 4, fraction));
    }
    for rank in [1, 16] {
        out.push(low_rank("attn", ATTENTION, rank, 0.02));
    }
    for fraction in [0.005, 0.02, 0.1] {
        out.push(low_rank("mlp", MLP, 4, fraction));
    }
    out
}

fn pct(fraction: f64) -> String {
    format!("{}", fraction * 100.0)
}

fn variant(name: &str, edit: Edit, about: &str) -> Variant {
    Variant {
        name: name.into(),
        edit,
        about: about.into(),
    }
}

fn low_rank(kind: &str, targets: &'static [&'static str], rank: usize, fraction: f64) -> Variant {
    variant(
        &format!("lowrank-{kind}-r{rank}-{}pct", pct(fraction)),
        Edit::LowRank {
            targets,
            rank,
            fraction,
        },
        &format!(
            "rank-{rank} update of every layer's {kind} projections, {}% of each weight's norm",
            pct(fraction)
        ),
    )
}

/// Where the variants of the SmolLM2 fixture live.
pub fn variants_dir() -> PathBuf {
    pot_formats::fixtures::cache_dir()
        .join("variants")
        .join("smollm2-135m")
}

/// Seed of a variant: a hash of its name, so adding variants never changes the others.
fn seed_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn normal(rng: &mut Rng) -> f64 {
    // Box-Muller; 1 - u keeps the logarithm finite.
    let (u, v) = (1.0 - rng.uniform(), rng.uniform());
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

/// Applies `edit` to one tensor's values (`shape` row-major).
fn apply(edit: &Edit, rng: &mut Rng, name: &str, shape: &[usize], values: &mut [f32]) {
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
fn q8_0_roundtrip(values: &mut [f32]) {
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
fn add_low_rank(w: &mut [f32], rows: usize, cols: usize, r: usize, fraction: f64, rng: &mut Rng) {
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

/// Writes `variant` of `model` into `dir/<name>` unless it is already there.
pub fn write(model: &Model, dir: &Path, variant: &Variant) -> Result<PathBuf> {
    let out = dir.join(&variant.name);
    if out.join("model.safetensors").is_file() {
        return Ok(out);
    }
    let dtype = match &variant.edit {
        Edit::Encoding(d) => *d,
        _ => OutputDType::F32,
    };
    let shapes: std::collections::HashMap<String, Vec<usize>> = model
        .tensors()
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect();
    let mut rng = Rng::new(seed_of(&variant.name));
    convert_with(
        model,
        &out,
        dtype,
        |name, values| apply(&variant.edit, &mut rng, name, &shapes[name], values),
        |_, _| {},
    )
    .with_context(|| format!("writing variant {}", variant.name))?;
    Ok(out)
}

/// The Python that runs the transformers scripts: `$POT_PYTHON`, else the venv the README
/// suggests (`~/.cache/pot/pyenv`), else `python3`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("POT_PYTHON") {
        return p.into();
    }
    let venv = pot_formats::fixtures::cache_dir()
        .parent()
        .map(|p| p.join("pyenv/bin/python"));
    match venv {
        Some(v) if v.is_file() => v,
        _ => "python3".into(),
    }
}

/// Whether torch and transformers import; the reason when not.
pub fn torch_available(python: &Path) -> std::result::Result<(), String> {
    let out = Command::new(python)
        .args(["-c", "import torch, transformers"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} cannot import torch and transformers (pip install -r fixtures/variants/requirements.txt)",
            python.display()
        ))
    }
}

/// Runs `fixtures/variants/<script>` with `args`.
fn run_script(python: &Path, script: &str, args: &[&str]) -> Result<()> {
    let path = fixtures::workspace_root()
        .join("fixtures/variants")
        .join(script);
    let status = Command::new(python)
        .arg(&path)
        .args(args)
        .status()
        .with_context(|| format!("cannot run {}", path.display()))?;
    if !status.success() {
        bail!("{} failed ({status})", path.display());
    }
    Ok(())
}

/// The transformers-made variants: fine-tunes after 1, 10 and 100 steps, and the F32 copy
/// re-saved by transformers 5 (with a 4.x-style config beside it).
pub fn python_variants(dir: &Path) -> Result<()> {
    let python = python();
    if let Err(reason) = torch_available(&python) {
        eprintln!("skipping the fine-tunes and re-saved copies: {reason}");
        return Ok(());
    }
    let f32_dir = dir.join("f32");
    let f32_dir = f32_dir.to_str().context("non-UTF-8 path")?;
    if !dir.join("finetune-100/model.safetensors").is_file() {
        let out = dir.to_str().context("non-UTF-8 path")?;
        run_script(&python, "finetune.py", &[f32_dir, out])?;
    }
    if !dir.join("resaved-4x/model.safetensors").is_file() {
        let out = dir.to_str().context("non-UTF-8 path")?;
        run_script(&python, "resave.py", &[f32_dir, out])?;
    }
    Ok(())
}

pub fn run(args: &[String]) -> Result<()> {
    let only: Vec<&String> = args.iter().collect();
    let source = fixtures::ensure_named("smollm2-135m")?;
    let model = Model::open(&source)?;
    let dir = variants_dir();
    std::fs::create_dir_all(&dir)?;
    for v in catalogue() {
        if !only.is_empty() && !only.iter().any(|o| **o == v.name) {
            continue;
        }
        let started = std::time::Instant::now();
        let path = write(&model, &dir, &v)?;
        eprintln!(
            "{:<28} {} ({:.1} s)",
            v.name,
            path.display(),
            started.elapsed().as_secs_f64()
        );
    }
    if only.is_empty() {
        python_variants(&dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_rank_update_has_the_asked_norm_and_q8_is_close() {
        let (rows, cols) = (24, 40);
        let mut rng = Rng::new(1);
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
