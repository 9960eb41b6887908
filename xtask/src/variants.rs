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
use pot_formats::Model;
use pot_formats::convert::OutputDType;
use pot_formats::variants::{ATTENTION, Edit, MLP, seed_of, write_variant};

use crate::fixtures;

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

fn low_rank(kind: &str, targets: &[&str], rank: usize, fraction: f64) -> Variant {
    variant(
        &format!("lowrank-{kind}-r{rank}-{}pct", pct(fraction)),
        Edit::LowRank {
            targets: targets.iter().map(|t| t.to_string()).collect(),
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

/// Writes `variant` of `model` into `dir/<name>` unless it is already there.
pub fn write(model: &Model, dir: &Path, variant: &Variant) -> Result<PathBuf> {
    let out = dir.join(&variant.name);
    if out.join("model.safetensors").is_file() {
        return Ok(out);
    }
    write_variant(model, &out, &variant.edit, seed_of(&variant.name))
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
