//! `cargo xtask detection`: the detection table of docs/STATISTICS.md. For each variant of
//! SmolLM2 (`cargo xtask variants`) and a few fixture pairs, the per-challenge scores from
//! `pot calibrate` (the first N challenges of one run, no early stopping), then the sequential
//! test of every mode under every tolerance setting replayed over that stream (challenge i is
//! the same for every count, so this is exactly what `pot verify` with the same key and run id
//! sees), plus the noise floors of the same-weights paths `pot verify` runs (batch size,
//! threads, int8). Writes the table between markers in docs/STATISTICS.md and a JSON copy
//! under the fixtures cache.

use std::path::{Path as FsPath, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use pot_stats::{Method, Mode, Path, SequentialTest, Step, Tolerance, Verdict};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{fixtures, variants};

const BEGIN: &str = "<!-- detection-table:begin (cargo xtask detection) -->";
const END: &str = "<!-- detection-table:end -->";
const RUN_ID: &str = "detection";

/// A pair measured for the table.
struct Pair {
    name: String,
    about: String,
    /// What the table requires of the default tolerance (None: no requirement, shown only).
    expect_default: Option<Verdict>,
    model1: PathBuf,
    model2: PathBuf,
    /// Extra `pot calibrate` arguments (e.g. `--enable-8bit`).
    extra: Vec<String>,
    /// The path `pot verify` sets its default tolerance from for this pair (the encodings of
    /// the two sides: pot-cli's `deployment::local_path`).
    path: Path,
}

/// The public key of the table's runs: SHA-256 of a fixed phrase (a test key, never a secret).
fn key_file(dir: &FsPath) -> Result<PathBuf> {
    let path = dir.join("detection.key");
    let key = hex::encode(Sha256::digest(b"pot detection table v1 (public test key)"));
    std::fs::write(&path, key)?;
    Ok(path)
}

/// `pot` as built by cargo (one build shared with the tests), or `$POT_BIN` (e.g. a build with
/// `--features pot-scoring/ndarray`, so the backend rows can be measured).
fn pot() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("POT_BIN") {
        return Ok(bin.into());
    }
    crate::built_pot()
}

/// The scores of the first `n` challenges (`pot calibrate --json`).
fn stream(pot: &FsPath, key: &FsPath, pair: &Pair, n: u64) -> Result<Vec<f64>> {
    let started = std::time::Instant::now();
    let out = Command::new(pot)
        .arg("calibrate")
        .arg("--model1")
        .arg(&pair.model1)
        .arg("--model2")
        .arg(&pair.model2)
        .args([
            "-n",
            &n.to_string(),
            "--run-id",
            RUN_ID,
            "--json",
            "--quiet",
        ])
        .arg("--key-file")
        .arg(key)
        .args(&pair.extra)
        .output()
        .context("cannot run pot calibrate")?;
    if !out.status.success() {
        bail!(
            "pot calibrate on {} failed: {}",
            pair.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let json: Value = serde_json::from_slice(&out.stdout)?;
    let scores: Vec<f64> = json["scores"]
        .as_array()
        .context("no scores")?
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    eprintln!(
        "  {}: {} scores, mean {:.5} ({:.0} s)",
        pair.name,
        scores.len(),
        mean(&scores),
        started.elapsed().as_secs_f64()
    );
    Ok(scores)
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len().max(1) as f64
}

/// A verdict and the queries it took.
type Decided = (Verdict, u64);

/// The verdict of `mode` over `scores` and the queries it took; `None` when the stream ended
/// before the test stopped (more scores needed).
fn replay(mode: &Mode, scores: &[f64]) -> Option<Decided> {
    let mut test = SequentialTest::new(mode.clone(), Method::Betting, 1.0).expect("valid mode");
    for &s in scores {
        if let Step::Stop(v) = test.push(s).expect("scores in [0, 1]") {
            return Some((v, test.outcome().n));
        }
    }
    None
}

fn tolerances() -> [Tolerance; 2] {
    [Tolerance::Default, Tolerance::Quantized]
}

/// Every mode under the pair's path tolerance (`pot verify`'s default), then under each preset
/// (default quick/audit/extended, then quantized), replayed over `scores`; `None` where the
/// stream ended before the test stopped.
fn settings(path: Path) -> Vec<Mode> {
    let gamma = path.tolerance().gamma;
    Mode::all()
        .map(|m| m.with_gamma(gamma))
        .into_iter()
        .chain(
            tolerances()
                .into_iter()
                .flat_map(|t| Mode::all().map(|m| m.with_tolerance(t))),
        )
        .collect()
}

fn verdicts(scores: &[f64], path: Path) -> Vec<Option<Decided>> {
    settings(path)
        .iter()
        .map(|mode| replay(mode, scores))
        .collect()
}

/// The largest query cap among the settings the stream did not decide (more scores needed).
fn short_of(scores: &[f64], path: Path) -> Option<u64> {
    settings(path)
        .iter()
        .filter(|mode| replay(mode, scores).is_none())
        .map(|mode| mode.n_max)
        .max()
}

/// Scores of a pair, fetched until every mode and tolerance has stopped.
fn stream_until_decided(pot: &FsPath, key: &FsPath, pair: &Pair, mut n: u64) -> Result<Vec<f64>> {
    loop {
        let scores = stream(pot, key, pair, n)?;
        match short_of(&scores, pair.path) {
            None => return Ok(scores),
            Some(cap) if cap > n => n = cap,
            Some(_) => bail!("{}: the test did not stop at its cap", pair.name),
        }
    }
}

fn pairs(dir: &FsPath) -> Result<Vec<Pair>> {
    let smollm2 = fixtures::ensure_named("smollm2-135m")?;
    let pair = |name: &str, about: &str, expect: Option<Verdict>, m2: PathBuf| Pair {
        name: name.into(),
        about: about.into(),
        expect_default: expect,
        model1: smollm2.clone(),
        model2: m2,
        extra: Vec::new(),
        path: match name {
            "f16" => Path::F16,
            "bf16" => Path::Bf16,
            _ => Path::Identical,
        },
    };
    let mut out = Vec::new();
    for v in variants::catalogue() {
        let expect = match v.name.as_str() {
            "f32" | "f16" | "bf16" => Some(Verdict::Same),
            n if n.starts_with("lowrank-attn")
                && !n.contains("-0.5pct")
                && !n.contains("-1pct") =>
            {
                Some(Verdict::Different)
            }
            _ => None,
        };
        let about = if v.name == "f32" {
            "GGUF vs its F32 conversion (pot convert)".to_string()
        } else {
            v.about.clone()
        };
        out.push(pair(&v.name, &about, expect, dir.join(&v.name)));
    }
    let mut int8 = pair(
        "bf16 (--enable-8bit)",
        "the bf16 copy, both models run with pot's int8 weights",
        None,
        dir.join("bf16"),
    );
    int8.extra = vec!["--enable-8bit".into()];
    int8.path = Path::Int8Both;
    out.push(int8);
    for (name, about, expect) in [
        (
            "resaved-5x",
            "F32 copy loaded and saved by transformers 5 (rope_parameters)",
            Some(Verdict::Same),
        ),
        (
            "resaved-4x",
            "the same with the config in the transformers 4.x layout",
            Some(Verdict::Same),
        ),
        (
            "finetune-1",
            "AdamW lr 2e-5, 1 step on docs/*.md (fixtures/variants/finetune.py)",
            None,
        ),
        (
            "finetune-10",
            "the same, 10 steps",
            Some(Verdict::Different),
        ),
        (
            "finetune-100",
            "the same, 100 steps",
            Some(Verdict::Different),
        ),
    ] {
        if dir.join(name).join("model.safetensors").is_file() {
            out.push(pair(name, about, expect, dir.join(name)));
        } else {
            eprintln!("{name}: not built (needs torch + transformers), left out of the table");
        }
    }
    out.push(Pair {
        name: "qwen-0.5b-vs-1.5b".into(),
        about: "Qwen2.5-Coder 0.5B vs 1.5B (another model, same tokenizer)".into(),
        expect_default: Some(Verdict::Different),
        model1: fixtures::ensure_named("qwen2.5-coder-0.5b")?,
        model2: fixtures::ensure_named("qwen2.5-coder-1.5b")?,
        extra: Vec::new(),
        path: Path::Identical,
    });
    Ok(out)
}

/// The `pot verify` rows: name, how it was run, the extra arguments.
const VERIFY_ROWS: &[(&str, &str, &[&str])] = &[
    (
        "batch size 1",
        "fingerprint (batch 8) vs live, `--batch-size 1`",
        &["--batch-size", "1"],
    ),
    (
        "1 thread",
        "fingerprint (2 threads) vs live, `--threads 1`",
        &["--threads", "1"],
    ),
    (
        "backend ndarray",
        "fingerprint (flex) vs live on burn-ndarray, `--backend ndarray`",
        &["--backend", "ndarray"],
    ),
    (
        "backend wgpu",
        "fingerprint (flex) vs live on burn-wgpu, `--backend wgpu`",
        &["--backend", "wgpu"],
    ),
    (
        "int8 (--enable-8bit)",
        "fingerprint (f32 weights) vs live int8 weights, `--tolerance quantized`",
        &["--enable-8bit", "--tolerance", "quantized"],
    ),
];

/// A `pot verify` row: name, how it was run, the scores of its queries, the verdict.
type VerifyRow = (String, String, Vec<f64>, String);

/// Noise floors of the paths inside `pot verify` that a model pair cannot show: a fingerprint
/// of the SmolLM2 GGUF (batch 8, all threads, f32 weights) against the same GGUF scored live
/// with another batch size, one thread, or int8 weights. Real `pot verify --reference` runs in
/// QUICK (they stop at the verdict); rows: (name, about, scores, verdict cell).
fn verify_rows(pot: &FsPath, key: &FsPath, dir: &FsPath) -> Result<Vec<VerifyRow>> {
    let model = fixtures::ensure_named("smollm2-135m")?;
    let fp = dir.join("detection-quick.potfp");
    let common = |cmd: &mut Command| {
        cmd.arg("--key-file")
            .arg(key)
            .args(["--run-id", RUN_ID, "--mode", "quick", "--quiet"]);
    };
    let mut cmd = Command::new(pot);
    cmd.arg("fingerprint").arg(&model).arg("-o").arg(&fp);
    common(&mut cmd);
    if !cmd.status()?.success() {
        bail!("pot fingerprint failed");
    }
    let mut rows = Vec::new();
    for (name, about, args) in VERIFY_ROWS {
        let report = dir.join("detection-verify.json");
        let mut cmd = Command::new(pot);
        cmd.arg("verify")
            .arg("--reference")
            .arg(&fp)
            .arg("--model2")
            .arg(&model);
        cmd.arg("-o").arg(&report).args(*args);
        common(&mut cmd);
        std::fs::remove_file(&report).ok();
        let out = cmd.output()?;
        let status = out.status;
        let Ok(text) = std::fs::read_to_string(&report) else {
            // pot's error line, made safe for a Markdown table cell.
            let stderr = String::from_utf8_lossy(&out.stderr);
            let why: String = stderr
                .lines()
                .find(|l| l.starts_with("error"))
                .unwrap_or("no report written")
                .rsplit("': ")
                .next()
                .unwrap_or_default()
                .replace(['<', '>'], "")
                .replace('|', "/");
            eprintln!("  {name}: not measured: {why}");
            rows.push((
                name.to_string(),
                about.to_string(),
                Vec::new(),
                format!("not measured: {why}"),
            ));
            continue;
        };
        let r: Value = serde_json::from_str(&text)?;
        let scores: Vec<f64> = r["trace"]
            .as_array()
            .map(|t| t.iter().filter_map(|e| e["score"].as_f64()).collect())
            .unwrap_or_default();
        let verdict = format!(
            "{} {} (exit {})",
            r["final_decision"].as_str().unwrap_or("?"),
            scores.len(),
            status.code().unwrap_or(-1)
        );
        eprintln!("  {name}: {verdict}, mean {:.6}", mean(&scores));
        rows.push((name.to_string(), about.to_string(), scores, verdict));
    }
    Ok(rows)
}

fn cell(r: &Decided) -> String {
    let v = match r.0 {
        Verdict::Same => "SAME",
        Verdict::Different => "DIFFERENT",
        Verdict::Undecided => "UNDECIDED",
    };
    format!("{v} {}", r.1)
}

/// Measured scores by row name: the cache the table is rendered from (`detection.json`).
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Measured {
    pairs: std::collections::BTreeMap<String, Vec<f64>>,
    /// `pot verify` rows: scores and the verdict line.
    verify: std::collections::BTreeMap<String, (Vec<f64>, String)>,
}

pub fn run(args: &[String]) -> Result<()> {
    let only: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let write = !args.iter().any(|a| a == "--no-write");
    let reuse = args.iter().any(|a| a == "--reuse");
    variants::run(&[])?;
    let dir = variants::variants_dir();
    let pot = pot()?;
    let key = key_file(&dir)?;
    let cache_path = dir.join("detection.json");
    let mut measured: Measured = if reuse || !only.is_empty() {
        std::fs::read_to_string(&cache_path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    } else {
        Measured::default()
    };
    let pairs = pairs(&dir)?;
    for pair in &pairs {
        let selected = only.is_empty() || only.iter().any(|o| **o == pair.name);
        let cached = measured.pairs.get(&pair.name);
        let fresh_enough = reuse && cached.is_some_and(|s| short_of(s, pair.path).is_none());
        if selected && !fresh_enough {
            let scores = stream_until_decided(&pot, &key, pair, 48)?;
            measured.pairs.insert(pair.name.clone(), scores);
        }
    }
    if only.is_empty() && (!reuse || measured.verify.is_empty()) {
        measured.verify.clear();
        for (name, _, scores, verdict) in verify_rows(&pot, &key, &dir)? {
            measured.verify.insert(name, (scores, verdict));
        }
    }
    std::fs::write(&cache_path, serde_json::to_string_pretty(&measured)?)?;

    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let mut complete = true;
    for pair in &pairs {
        let Some(scores) = measured.pairs.get(&pair.name) else {
            complete = false;
            continue;
        };
        let decided = verdicts(scores, pair.path);
        let cells: Vec<String> = decided
            .iter()
            .map(|d| d.as_ref().map_or("(more scores needed)".into(), cell))
            .collect();
        // What the path tolerance promises: the preset's promises, and the 1-step fine-tune.
        let expect_path = match pair.name.as_str() {
            "finetune-1" => Some(Verdict::Different),
            _ => pair.expect_default,
        };
        if let Some(expected) = expect_path
            && decided[..3]
                .iter()
                .any(|d| d.map(|d| d.0) != Some(expected))
        {
            failures.push(format!(
                "{}: expected {expected:?} under the path tolerance",
                pair.name
            ));
        }
        if let Some(expected) = pair.expect_default
            && decided[3..6]
                .iter()
                .any(|d| d.map(|d| d.0) != Some(expected))
        {
            failures.push(format!(
                "{}: expected {expected:?} under the default",
                pair.name
            ));
        }
        let max = scores.iter().copied().fold(0.0, f64::max);
        rows.push(format!(
            "| {} | {} | {:.5} | {max:.5} | {} (γ = {}) | {} | {} |",
            pair.name,
            pair.about,
            mean(scores),
            cells[..3].join(" / "),
            pair.path.tolerance().gamma,
            cells[3..6].join(" / "),
            cells[6..].join(" / "),
        ));
    }
    for (name, about, _) in VERIFY_ROWS {
        let Some((scores, verdict)) = measured.verify.get(*name) else {
            complete = false;
            continue;
        };
        if scores.is_empty() {
            rows.push(format!("| {name} | {about} | | | | {verdict} | |"));
            continue;
        }
        let max = scores.iter().copied().fold(0.0, f64::max);
        rows.push(format!(
            "| {name} | {about} | {:.5} | {max:.5} | | {verdict} (QUICK, `pot verify`) | |",
            mean(scores)
        ));
    }
    let header = format!(
        "Command: `cargo xtask detection` (reference: the SmolLM2-135M GGUF; run id `{RUN_ID}`, public \
         test key; scores from `pot calibrate`, verdicts replayed per mode on the same stream). \
         Cells: verdict and queries for QUICK / AUDIT / EXTENDED. `path`: `pot verify`'s default, \
         the tolerance of the pair's path (pot_stats::Path, from the two encodings).\n\n\
         | pair | how it was made | mean score | max score | path (pot verify's default) | preset default (γ = {}) | quantized (γ = {}) |\n\
         |---|---|---|---|---|---|---|",
        Tolerance::Default.gamma(),
        Tolerance::Quantized.gamma()
    );
    let table = format!("{header}\n{}\n", rows.join("\n"));
    println!("{table}");
    if write && complete {
        let path = fixtures::workspace_root().join("docs/STATISTICS.md");
        let doc = std::fs::read_to_string(&path)?;
        let (Some(a), Some(b)) = (doc.find(BEGIN), doc.find(END)) else {
            bail!("{} has no detection-table markers", path.display());
        };
        let new = format!("{}{BEGIN}\n{table}{}", &doc[..a], &doc[b..]);
        std::fs::write(&path, new)?;
        eprintln!("wrote the table into {}", path.display());
    } else if write {
        eprintln!("some rows are not measured yet: the table was not written into the docs");
    }
    if !failures.is_empty() {
        bail!("requirements not met:\n{}", failures.join("\n"));
    }
    Ok(())
}
