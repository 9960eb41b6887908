//! `cargo xtask bigmodel`: the predecessor's scenario, a 7B-class model verified on a machine
//! with less memory than its weights. Writes a LLaMA-7B-shaped model (32 layers, hidden 4096,
//! MLP 11008, 32 heads; SmolLM2's tokenizer, so a vocabulary of 49,152 instead of LLaMA's
//! 32,000: no 32,000-token tokenizer is reachable offline) as F16 safetensors (~13.9 GB) with
//! deterministic random weights, and a copy whose layer 15 MLP down projection carries noise of
//! 20 % of its norm; then runs `pot verify` of the model against itself and against the copy
//! under `--max-memory 4 --enable-offload` with `/usr/bin/time -v`, and prints the figures for
//! docs/BENCHMARKS.md. Not part of CI (tens of minutes).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use pot_formats::ModelConfig;
use pot_formats::convert::OutputDType;
use pot_formats::variants::{random_values, write_random_model};

use crate::fixtures;

const HIDDEN: usize = 4096;
const INTERMEDIATE: usize = 11008;
const LAYERS: usize = 32;
const HEADS: usize = 32;
/// The layer whose MLP down projection the modified copy perturbs, and by how much (relative
/// to the weight's norm).
const MODIFIED_LAYER: usize = 15;
const NOISE: f32 = 0.2;

pub fn run(args: &[String]) -> Result<()> {
    let (mut budget, mut verify) = ("4".to_string(), true);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.clone().next()) {
            ("--max-memory", Some(gb)) => {
                budget = gb.clone();
                args.next();
            }
            ("--write-only", _) => verify = false,
            _ => bail!("usage: cargo xtask bigmodel [--max-memory GB] [--write-only]"),
        }
    }
    let smol = pot_formats::Model::open(fixtures::ensure_named("smollm2-135m")?)?;
    let tokenizer = smol.tokenizer()?;
    let config = ModelConfig {
        vocab_size: smol.config().vocab_size,
        bos_token_id: smol.config().bos_token_id,
        eos_token_id: smol.config().eos_token_id,
        ..ModelConfig::llama(HIDDEN, INTERMEDIATE, LAYERS, HEADS, HEADS, 0)
    };
    let root = pot_formats::fixtures::cache_dir().join("bigmodel");
    let base = root.join("llama-7b-shaped");
    let modified = root.join(format!("llama-7b-shaped-l{MODIFIED_LAYER}-down-noise20"));
    for (dir, modify) in [(&base, false), (&modified, true)] {
        if dir.is_dir() {
            println!("{} exists (delete it to rewrite)", dir.display());
        } else {
            write_model(dir, &config, &tokenizer, modify)?;
        }
    }
    if !verify {
        return Ok(());
    }
    let pot = crate::built_pot()?;
    let key = root.join("bigmodel.key");
    for (name, model2) in [("itself", &base), ("the modified copy", &modified)] {
        let report = root.join(format!(
            "report-{}.json",
            model2.file_name().unwrap().to_string_lossy()
        ));
        println!("verifying against {name} under --max-memory {budget} ...");
        let out = Command::new("/usr/bin/time")
            .arg("-v")
            .arg(&pot)
            .args(["verify", "--model1"])
            .arg(&base)
            .arg("--model2")
            .arg(model2)
            .args([
                "--mode",
                "quick",
                "--max-memory",
                &budget,
                "--enable-offload",
                "-q",
            ])
            .arg("--key-file")
            .arg(&key)
            .arg("--create-key")
            .arg("-o")
            .arg(&report)
            .output()
            .context("cannot run /usr/bin/time (apt-get install time)")?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        let stderr = String::from_utf8_lossy(&out.stderr);
        for line in stderr.lines() {
            if line.contains("Maximum resident set size") || line.contains("Elapsed (wall") {
                println!("  {}", line.trim());
            }
        }
        let r: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&report).with_context(|| format!("no report ({stderr})"))?,
        )?;
        let events: Vec<String> = r["memory"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                format!(
                    "{:.1} s {}",
                    e["at_s"].as_f64().unwrap_or(0.0),
                    e["message"]
                )
            })
            .collect();
        println!(
            "  exit {:?}; {} in {} queries; timings {}; plan {} ({} estimated of {}); events: {}",
            out.status.code(),
            r["final_decision"],
            r["enhanced_diff"]["n_effective"],
            r["timings_s"],
            r["memory"]["plan"]["execution"],
            r["memory"]["plan"]["model1"]["estimate"]["total_bytes"],
            r["memory"]["plan"]["model1"]["budget_bytes"],
            events.join("; ")
        );
    }
    Ok(())
}

/// The model, or the copy whose layer `MODIFIED_LAYER` down projection carries `NOISE`.
fn write_model(
    dir: &Path,
    config: &ModelConfig,
    tokenizer: &pot_formats::Tokenizer,
    modify: bool,
) -> Result<()> {
    let started = std::time::Instant::now();
    let target = format!("model.layers.{MODIFIED_LAYER}.mlp.down_proj.weight");
    let mut written = 0;
    write_random_model(
        dir,
        config,
        tokenizer,
        OutputDType::F16,
        "cargo xtask bigmodel",
        |name, values| {
            if modify && name == target {
                let noise = random_values(&format!("{name}#noise"), &[HIDDEN, INTERMEDIATE]);
                let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
                let scale = NOISE * (norm(values) / norm(&noise)) as f32;
                for (v, n) in values.iter_mut().zip(&noise) {
                    *v += scale * n;
                }
            }
            written += 1;
            if written % 16 == 0 {
                eprintln!(
                    "  {} {written} tensors, {:.0} s",
                    dir.display(),
                    started.elapsed().as_secs_f64()
                );
            }
        },
    )?;
    println!(
        "wrote {} in {:.0} s",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
