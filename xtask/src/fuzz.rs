//! `cargo xtask fuzz TARGET [--time S]`: runs one libFuzzer target of `fuzz/` with cargo-fuzz
//! (`cargo install cargo-fuzz`), seeded with real inputs: a tiny complete GGUF and the head of
//! the fixture GGUF files (header and metadata), the committed transformers configs, score and key files. Crashes land
//! in `fuzz/artifacts/TARGET/`; each one found becomes a crafted-file regression test.
//! Figures per target go to docs/SECURITY.md.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::fixtures;

pub const TARGETS: &[&str] = &[
    "gguf",
    "config_json",
    "scores_and_keys",
    "merkle_proof",
    "potfp",
    "safetensors",
];

/// Largest input libFuzzer makes (the GGUF seeds are cut to this; the safetensors seeds, tiny
/// whole models, are about 100 KB).
const MAX_LEN: usize = 65_536;
const MAX_LEN_SAFETENSORS: usize = 131_072;

fn seed(dir: &Path, target: &str) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let root = fixtures::workspace_root();
    match target {
        "gguf" => {
            // A tiny complete GGUF (every part parses; fuzz/seeds/make_gguf_seed.py) and the
            // heads of the real fixtures.
            for entry in std::fs::read_dir(root.join("fuzz/seeds/gguf"))? {
                let path = entry?.path();
                std::fs::copy(&path, dir.join(path.file_name().unwrap()))?;
            }
            for name in ["smollm2-135m", "qwen2.5-coder-0.5b"] {
                let path = fixtures::ensure_named(name)?;
                let mut head = vec![0u8; MAX_LEN];
                let n = std::io::Read::read(&mut std::fs::File::open(&path)?, &mut head)?;
                std::fs::write(dir.join(name), &head[..n])?;
            }
        }
        "config_json" => {
            for entry in std::fs::read_dir(root.join("fixtures/transformers-parity"))? {
                let config = entry?.path().join("config.json");
                if config.is_file() {
                    let name = config.parent().unwrap().file_name().unwrap().to_owned();
                    std::fs::copy(&config, dir.join(name))?;
                }
            }
        }
        "scores_and_keys" => {
            std::fs::write(dir.join("scores"), "# scores\n0.01\n0.002\n\n0.5\n")?;
            std::fs::write(dir.join("key"), "ab".repeat(32))?;
        }
        "merkle_proof" => {
            let leaf = "0".repeat(64);
            let proof = format!(
                r#"{{"leaf":{{"name":"t","dtype":"F32","shape":[2,3],"bytes_sha256":"{leaf}"}},"index":1,"size":3,"path":["{leaf}","{leaf}"],"root":"{leaf}","encoding":"stored"}}"#
            );
            std::fs::write(dir.join("proof.json"), proof)?;
        }
        "potfp" => {
            // A small real fingerprint (two challenges, top-8) signed under the target's key.
            std::fs::write(dir.join("fingerprint.potfp"), potfp_seed())?;
        }
        "safetensors" => {
            // The tiny transformers-saved models: the same config as the target's.
            for name in ["llama-default", "llama-tied"] {
                let path = root.join("fixtures/transformers-parity").join(name);
                std::fs::copy(path.join("model.safetensors"), dir.join(name))?;
            }
        }
        other => bail!(
            "unknown fuzz target `{other}`; targets: {}",
            TARGETS.join(", ")
        ),
    }
    Ok(())
}

/// The bytes of a small fingerprint under the potfp target's fixed key (`[7; 32]`).
fn potfp_seed() -> Vec<u8> {
    use pot_fingerprint::{ChallengeRecord, Fingerprint, FingerprintHeader, summarise_position};
    let vocab = 64usize;
    let row = |seed: usize| -> Vec<f32> {
        let logits: Vec<f64> = (0..vocab)
            .map(|i| ((i * 7 + seed * 13) % 17) as f64 / 3.0)
            .collect();
        let norm = logits.iter().map(|l| l.exp()).sum::<f64>().ln();
        logits.iter().map(|l| (l - norm) as f32).collect()
    };
    let record = |index: u64| {
        let token_ids: Vec<u32> = (0..12)
            .map(|i| (i * 5 + index as u32) % vocab as u32)
            .collect();
        let positions = (4..11)
            .map(|p| summarise_position(&row(p), 8, token_ids[p + 1]))
            .collect();
        ChallengeRecord {
            index,
            challenge_id: format!("seed-{index}"),
            token_ids,
            first_scored: 4,
            positions,
        }
    };
    let fp = Fingerprint {
        header: FingerprintHeader {
            model: "seed".into(),
            config_sha256: "0".repeat(64),
            vocab_sha256: "0".repeat(64),
            merkle_root: None,
            run_id: "verify".into(),
            key_id: pot_challenge_kdf::MasterKey::from_bytes([7; 32]).id().0,
            commitment: "0".repeat(64),
            top_k: 8,
            prefix: 4,
        },
        records: vec![record(0), record(1)],
    };
    fp.to_bytes(&pot_challenge_kdf::MasterKey::from_bytes([7; 32]))
}

pub fn run(args: &[String]) -> Result<()> {
    let Some(target) = args.first() else {
        bail!(
            "usage: cargo xtask fuzz TARGET [--time SECONDS]; targets: {}",
            TARGETS.join(", ")
        );
    };
    let time: u64 = match args.iter().position(|a| a == "--time") {
        Some(i) => args.get(i + 1).context("--time needs seconds")?.parse()?,
        None => 60,
    };
    let fuzz = fixtures::workspace_root().join("fuzz");
    let seeds = fuzz.join("corpus").join(format!("{target}-seeds"));
    seed(&seeds, target)?;
    let corpus = fuzz.join("corpus").join(target);
    std::fs::create_dir_all(&corpus)?;
    // `-s none`: no sanitizer, so the pinned stable toolchain builds it (Rust code is memory
    // safe outside `unsafe`; what we look for is panics, aborts, overflows and huge allocations,
    // which libFuzzer reports without ASan: -rss_limit_mb and -malloc_limit_mb catch the last).
    let status = Command::new("cargo")
        .current_dir(&fuzz)
        .env_remove("CARGO_TARGET_DIR")
        .args(["fuzz", "run", "-s", "none", "--release", target])
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={time}"))
        .arg(format!(
            "-max_len={}",
            if target == "safetensors" {
                MAX_LEN_SAFETENSORS
            } else {
                MAX_LEN
            }
        ))
        .args([
            "-rss_limit_mb=2048",
            "-malloc_limit_mb=1024",
            "-print_final_stats=1",
        ])
        .status()
        .context("cannot run `cargo fuzz` (install it with `cargo install cargo-fuzz`)")?;
    if !status.success() {
        bail!(
            "fuzz target {target} failed; the crashing input is in fuzz/artifacts/{target}/ \
             (make it a regression test)"
        );
    }
    Ok(())
}
