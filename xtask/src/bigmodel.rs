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
use pot_formats::convert::{OutputDType, write_hf_metadata, write_safetensors};
use pot_formats::variants::{SplitMix, seed_of};
use rayon::prelude::*;

use crate::fixtures;

const HIDDEN: usize = 4096;
const INTERMEDIATE: usize = 11008;
const LAYERS: usize = 32;
const HEADS: usize = 32;
/// The layer whose MLP down projection the modified copy perturbs, and by how much (relative
/// to the weight's norm).
const MODIFIED_LAYER: usize = 15;
const NOISE: f32 = 0.2;
/// Values per independently seeded chunk: generation is parallel and still deterministic.
const CHUNK: usize = 1 << 20;

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

/// The tensors of the configuration in sorted name order, with deterministic random values of
/// realistic scale: projections uniform with standard deviation 1/sqrt(fan-in) (activations
/// keep their size through the blocks), norms 1, embedding rows of unit scale, the head scaled
/// so logits spread by about 3 (peaked next-token distributions, as trained models have).
fn write_model(
    dir: &Path,
    config: &ModelConfig,
    tokenizer: &pot_formats::Tokenizer,
    modify: bool,
) -> Result<()> {
    let staging = dir.with_extension("partial");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    std::fs::create_dir_all(&staging)?;
    write_hf_metadata(&staging, config, tokenizer, OutputDType::F16)?;
    let mut tensors = pot_formats::model::expected_tensors(config);
    tensors.sort();
    let started = std::time::Instant::now();
    let target = format!("model.layers.{MODIFIED_LAYER}.mlp.down_proj.weight");
    write_safetensors(
        &staging.join("model.safetensors"),
        OutputDType::F16,
        &tensors,
        "cargo xtask bigmodel",
        |i, name| {
            let shape = &tensors[i].1;
            let mut values = random_values(name, shape);
            if modify && name == target {
                let noise = random_values(&format!("{name}#noise"), shape);
                let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
                let scale = NOISE * (norm(&values) / norm(&noise)) as f32;
                for (v, n) in values.iter_mut().zip(&noise) {
                    *v += scale * n;
                }
            }
            if i % 16 == 0 {
                eprintln!(
                    "  {} {i}/{} tensors, {:.0} s",
                    dir.display(),
                    tensors.len(),
                    started.elapsed().as_secs_f64()
                );
            }
            Ok(values)
        },
    )?;
    std::fs::rename(&staging, dir)?;
    println!(
        "wrote {} in {:.0} s",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn random_values(name: &str, shape: &[usize]) -> Vec<f32> {
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
