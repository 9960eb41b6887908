//! `cargo xtask bench scoring`: teacher-forced tokens per second of pot's scorer and of llama.cpp
//! on the same F32 weights, the same token ids and the same thread count, in one run; the table
//! goes into docs/BENCHMARKS.md between the `bench-scoring` markers.
//! Needs Python 3 with `gguf==0.19.0` (F32 conversion) and `llama-cpp-python==0.3.36`.
//!
//! `cargo xtask bench streaming [--runs N] [--model NAME]`: the same job resident and streamed
//! layer by layer, alternating, on a fixture converted to F32 safetensors (default Qwen2.5-Coder
//! 1.5B, 7.1 GB): timed passes, their ratio, and each side's peak RSS (`/usr/bin/time`) beside
//! the memory plan's streamed estimate. Prints the table for docs/BENCHMARKS.md.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use pot_challenge_kdf::{ChallengeSpec, MasterKey, generate};
use pot_formats::Model;

const MODELS: [&str; 2] = ["smollm2-135m", "qwen2.5-coder-0.5b"];
const BATCH: usize = 8;
const BATCHES: usize = 2;
const BEGIN: &str = "<!-- bench-scoring:begin -->";
const END: &str = "<!-- bench-scoring:end -->";

struct Options {
    runs: usize,
    threads: usize,
    write: bool,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        runs: 5,
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        write: true,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .context("flag needs a value")?
                .parse::<usize>()
                .context("a number")
        };
        match a.as_str() {
            "--runs" => o.runs = value()?,
            "--threads" => o.threads = value()?,
            "--no-write" => o.write = false,
            other => bail!(
                "unknown bench flag {other}; usage: cargo xtask bench scoring [--runs N] [--threads N] [--no-write]"
            ),
        }
    }
    Ok(o)
}

pub fn run(args: &[String]) -> Result<()> {
    match args.split_first() {
        Some((what, rest)) if what == "scoring" => scoring(&parse(rest)?),
        Some((what, rest)) if what == "streaming" => streaming(rest),
        Some((what, rest)) if what == "emulation" => emulation(&parse(rest)?),
        _ => bail!(
            "usage: cargo xtask bench scoring [--runs N] [--threads N] [--no-write]\n       \
             cargo xtask bench streaming [--runs N] [--model NAME]\n       \
             cargo xtask bench emulation [--runs N] [--threads N] [--no-write]"
        ),
    }
}

/// The benchmark's challenges as token batches, written to `file` for the bench_tokens example;
/// returns the longest sequence's length.
fn write_tokens(model: &Model, file: &Path) -> Result<usize> {
    let tokenizer = model.tokenizer()?;
    let key = MasterKey::from_bytes([0x42; 32]);
    let challenges = generate(
        &key,
        &ChallengeSpec::new("bench-scoring", (BATCH * BATCHES) as u64),
    );
    let ids: Vec<Vec<u32>> = challenges
        .iter()
        .map(|c| {
            tokenizer
                .encode_prompt(&c.prompt)
                .map_err(anyhow::Error::msg)
        })
        .collect::<Result<_>>()?;
    let batches: Vec<&[Vec<u32>]> = ids.chunks(BATCH).collect();
    std::fs::write(file, serde_json::json!({ "batches": batches }).to_string())?;
    Ok(ids.iter().map(Vec::len).max().unwrap_or(1))
}

fn streaming(args: &[String]) -> Result<()> {
    let (mut runs, mut name) = (3usize, "qwen2.5-coder-1.5b".to_string());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match (a.as_str(), it.next()) {
            ("--runs", Some(n)) => runs = n.parse().context("--runs N")?,
            ("--model", Some(m)) => name = m.clone(),
            _ => bail!("usage: cargo xtask bench streaming [--runs N] [--model NAME]"),
        }
    }
    let src = crate::fixtures::ensure_named(&name)?;
    let dir = work_dir();
    std::fs::create_dir_all(&dir)?;
    let f32_dir = dir.join(format!("{name}-f32"));
    let gguf = Model::open(&src)?;
    if !f32_dir.is_dir() {
        eprintln!("writing {} (F32 safetensors) ...", f32_dir.display());
        pot_formats::convert::convert(
            &gguf,
            &f32_dir,
            pot_formats::convert::OutputDType::F32,
            |_, _| {},
        )?;
    }
    let model = Model::open(&f32_dir)?;
    let tokens_file = dir.join(format!("{name}-tokens.json"));
    let max_tokens = write_tokens(&model, &tokens_file)?;
    let plan = pot_memory_governor::estimates(
        &model.description(),
        &pot_memory_governor::Workload {
            batch_size: BATCH,
            max_tokens,
        },
    );
    let streamed_estimate = plan
        .iter()
        .find(|(s, _)| matches!(s, pot_memory_governor::Strategy::Streamed { .. }))
        .map(|(_, e)| e.total_bytes)
        .unwrap_or(0);
    // Built once up front (with the workspace's features, so burn is not built a second time),
    // so the timed runs below measure the passes only.
    let build = crate::cargo()
        .args(["build", "--quiet", "--workspace", "--examples"])
        .status()?;
    if !build.success() {
        bail!("building the bench_tokens example failed");
    }
    // Resident F32, streamed F32, and streamed straight from the quantised GGUF the F32 copy
    // was converted from (the same values, dequantised on every pass).
    let sides: [(&str, &Path, &str); 3] = [
        ("resident", &f32_dir, "resident"),
        ("streamed", &f32_dir, "streamed"),
        ("streamed from the GGUF", &src, "streamed"),
    ];
    let (mut times, mut peaks) = ([Vec::new(), Vec::new(), Vec::new()], [0u64; 3]);
    let mut sums: [Option<serde_json::Value>; 3] = [None, None, None];
    for run in 1..=runs {
        for (side, (label, path, mode)) in sides.iter().enumerate() {
            eprintln!("{name}: run {run} of {runs}, {label}");
            let mut cmd = Command::new("/usr/bin/time");
            cmd.args(["-f", "maxrss_kb=%M"])
                .args(example_binary("bench_tokens"))
                .arg(path)
                .arg(&tokens_file)
                .arg("1")
                .arg(mode);
            let out = cmd
                .output()
                .context("cannot run /usr/bin/time (apt-get install time)")?;
            if !out.status.success() {
                bail!(
                    "bench_tokens {mode} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let text = String::from_utf8_lossy(&out.stdout);
            let line = text.lines().last().context("no output")?;
            let v: serde_json::Value = serde_json::from_str(line)?;
            times[side].extend(seconds(&v));
            sums[side] = Some(v["target_logprob_sums"].clone());
            let stderr = String::from_utf8_lossy(&out.stderr);
            let kb: u64 = stderr
                .lines()
                .filter_map(|l| l.strip_prefix("maxrss_kb="))
                .next_back()
                .and_then(|v| v.trim().parse().ok())
                .context("no maxrss from /usr/bin/time")?;
            peaks[side] = peaks[side].max(kb * 1024);
        }
    }
    let medians: Vec<f64> = times.iter().map(|t| median(t.clone())).collect();
    let gb = |b: u64| b as f64 / 1e9;
    let rounded = |t: &[f64]| {
        t.iter()
            .map(|t| format!("{t:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // Streamed / resident of each alternating pair of runs: the spread the machine allows.
    let pairs: Vec<String> = times[0]
        .iter()
        .zip(&times[1])
        .map(|(r, s)| format!("{:.2}", s / r))
        .collect();
    let mut table = format!(
        "Command: `cargo xtask bench streaming --runs {runs} --model {name}`; machine: {}; F32 \
         safetensors ({:.2} GB) converted from the GGUF ({:.2} GB), {} challenges in batches of \
         {BATCH}; median of {runs} timed passes per side, the sides alternating run by run \
         (streamed / resident per pair: {}).\n\n\
         | mode | timed pass (median) | passes | / resident | peak RSS | plan estimate (streamed) |\n\
         |---|---|---|---|---|---|\n",
        machine(),
        gb(model.file_bytes()),
        gb(gguf.file_bytes()),
        BATCH * BATCHES,
        pairs.join(", "),
    );
    for (side, (label, _, _)) in sides.iter().enumerate() {
        table += &format!(
            "| {label} | {:.1} s | {} | {:.2}x | {:.2} GB | {} |\n",
            medians[side],
            rounded(&times[side]),
            medians[side] / medians[0],
            gb(peaks[side]),
            if side == 0 {
                String::new()
            } else {
                format!("{:.2} GB", gb(streamed_estimate))
            },
        );
    }
    let same = |a: usize, b: usize| {
        if sums[a] == sums[b] {
            "identical"
        } else {
            "different"
        }
    };
    table += &format!(
        "\nPer-sequence log-prob sums: streamed vs resident {}, GGUF vs F32 {}.",
        same(0, 1),
        same(1, 2)
    );
    println!("{table}");
    Ok(())
}

/// The built example binary (`cargo build -p pot-scoring --example NAME` first).
fn example_binary(name: &str) -> Vec<String> {
    vec![
        crate::target_dir()
            .join("debug")
            .join("examples")
            .join(name)
            .display()
            .to_string(),
    ]
}

fn work_dir() -> PathBuf {
    pot_formats::fixtures::cache_dir().join("..").join("bench")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One JSON line from a command's stdout (its last line).
fn json_of(cmd: &mut Command, what: &str) -> Result<serde_json::Value> {
    let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().context("no output")?;
    serde_json::from_str(line).with_context(|| format!("{what} printed {line:?}"))
}

struct Row {
    model: String,
    params: u64,
    tokens: u64,
    padded: u64,
    ours: Vec<f64>,
    llama: Vec<f64>,
}

fn bench_model(name: &str, o: &Options) -> Result<Row> {
    let src = crate::fixtures::ensure_named(name)?;
    let dir = work_dir();
    std::fs::create_dir_all(&dir)?;
    let script_dir = crate::fixtures::workspace_root().join("fixtures/llamacpp-reference");
    let f32_path = json_path_line(
        Command::new(crate::variants::python())
            .arg(script_dir.join("f32gguf.py"))
            .arg(&src)
            .arg(&dir),
        "f32gguf.py (pip install gguf==0.19.0 numpy)",
    )?;
    let model = Model::open(&f32_path)?;
    let tokens_file = dir.join(format!("{name}-tokens.json"));
    write_tokens(&model, &tokens_file)?;

    // One timed run of each side at a time, alternating, so that both see the same machine:
    // on a shared 2-core VM the speed drifts by 10-30 % over minutes.
    let (mut ours, mut llama, mut tokens, mut padded) = (Vec::new(), Vec::new(), 0, 0);
    for run in 1..=o.runs {
        eprintln!(
            "{name}: run {run} of {}, {} threads: pot, then llama.cpp",
            o.runs, o.threads
        );
        let pot = json_of(
            example("bench_tokens")
                .arg(&f32_path)
                .arg(&tokens_file)
                .arg("1")
                .env("RAYON_NUM_THREADS", o.threads.to_string()),
            "the bench_tokens example",
        )?;
        ours.extend(seconds(&pot));
        tokens = pot["tokens"].as_u64().unwrap_or(0);
        padded = pot["padded"].as_u64().unwrap_or(0);
        let reference = json_of(
            Command::new(crate::variants::python())
                .arg(script_dir.join("bench_llamacpp.py"))
                .arg(&f32_path)
                .arg(&tokens_file)
                .arg(o.threads.to_string())
                .arg("1"),
            "bench_llamacpp.py (pip install llama-cpp-python==0.3.36)",
        )?;
        llama.extend(seconds(&reference));
    }
    Ok(Row {
        model: name.to_string(),
        params: model.description().parameter_count,
        tokens,
        padded,
        ours,
        llama,
    })
}

/// `cargo run --quiet -p pot-scoring --example NAME --`, ready for the example's arguments.
fn example(name: &str) -> Command {
    let mut cmd = crate::cargo();
    cmd.args([
        "run",
        "--quiet",
        "-p",
        "pot-scoring",
        "--example",
        name,
        "--",
    ]);
    cmd
}

/// The `"seconds"` list of a bench script's JSON line.
fn seconds(v: &serde_json::Value) -> Vec<f64> {
    v["seconds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_f64())
        .collect()
}

fn json_path_line(cmd: &mut Command, what: &str) -> Result<PathBuf> {
    let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores")
}

/// The machine's f32 FMA peak on `threads` threads (the `fma_peak` example): the ceiling no
/// matmul can pass, for the fraction column.
fn fma_peak(threads: usize) -> Result<f64> {
    let peak = json_of(
        example("fma_peak").arg(threads.to_string()),
        "the fma_peak example",
    )?;
    peak["gflops"]
        .as_f64()
        .context("fma_peak printed no \"gflops\"")
}

fn scoring(o: &Options) -> Result<()> {
    let ceiling = fma_peak(o.threads)?;
    let rows = MODELS
        .iter()
        .map(|m| bench_model(m, o))
        .collect::<Result<Vec<_>>>()?;
    let mut table = format!(
        "Command: `cargo xtask bench scoring --runs {} --threads {}`; machine: {}; F32 weights \
         (GGUF dequantised by gguf-py), {} challenges in batches of {BATCH} (pot packs a batch \
         without padding, \"padded\" is what padding to the longest sequence would cost; \
         llama.cpp evaluates each sequence alone), logits for every position, median of {} \
         runs, the two sides alternating run by run (in brackets: the lowest and highest ratio of \
         one pair of runs). GFLOP/s = 2 x parameters x tokens / s (attention not counted); ceiling = the \
         f32 FMA peak on {} threads measured in the same run, {ceiling:.0} GFLOP/s (`cargo run \
         -p pot-scoring --example fma_peak`).\n\n\
         | model | tokens (padded) | pot tok/s | llama.cpp tok/s | pot / llama.cpp | pot GFLOP/s (% of ceiling) | llama.cpp GFLOP/s (% of ceiling) |\n\
         |---|---|---|---|---|---|---|\n",
        o.runs,
        o.threads,
        machine(),
        BATCH * BATCHES,
        o.runs,
        o.threads,
    );
    for r in &rows {
        let ours = r.tokens as f64 / median(r.ours.clone());
        let llama = r.tokens as f64 / median(r.llama.clone());
        let gflops = |tps: f64| 2.0 * r.params as f64 * tps / 1e9;
        // pot / llama.cpp of each alternating pair of runs: the spread the machine allows.
        let pairs: Vec<f64> = r.llama.iter().zip(&r.ours).map(|(l, o)| l / o).collect();
        let (low, high) = pairs.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
        table += &format!(
            "| {} | {} ({}) | {:.0} | {:.0} | {:.2}x ({:.2}-{:.2}x) | {:.1} ({:.0} %) | {:.1} ({:.0} %) |\n",
            r.model,
            r.tokens,
            r.padded,
            ours,
            llama,
            ours / llama,
            low,
            high,
            gflops(ours),
            100.0 * gflops(ours) / ceiling,
            gflops(llama),
            100.0 * gflops(llama) / ceiling,
        );
    }
    print!("{table}");
    if o.write {
        write_between_markers(
            &crate::fixtures::workspace_root().join("docs/BENCHMARKS.md"),
            &table,
        )?;
        eprintln!("wrote the table into docs/BENCHMARKS.md");
    }
    Ok(())
}

/// `cargo xtask bench emulation`: on the Qwen 0.5B fixture as stored (Q4_K_M), pot's f32 pass
/// (weights dequantised), pot computing as llama.cpp does (`--emulate llama.cpp`) and llama.cpp
/// itself (f16 KV cache, as its server), the three alternating run by run.
fn emulation(o: &Options) -> Result<()> {
    let name = "qwen2.5-coder-0.5b";
    let file = crate::fixtures::ensure_named(name)?;
    let dir = work_dir();
    std::fs::create_dir_all(&dir)?;
    let model = Model::open(&file)?;
    let tokens_file = dir.join(format!("{name}-tokens.json"));
    write_tokens(&model, &tokens_file)?;
    let script_dir = crate::fixtures::workspace_root().join("fixtures/llamacpp-reference");
    let (mut exact, mut emulated, mut llama, mut tokens) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for run in 1..=o.runs {
        eprintln!(
            "{name} Q4_K_M: run {run} of {}: pot f32, pot emulated, llama.cpp",
            o.runs
        );
        for (mode, out) in [("resident", &mut exact), ("emulated", &mut emulated)] {
            let pot = json_of(
                example("bench_tokens")
                    .arg(&file)
                    .arg(&tokens_file)
                    .arg("1")
                    .arg(mode)
                    .env("RAYON_NUM_THREADS", o.threads.to_string()),
                "the bench_tokens example",
            )?;
            out.extend(seconds(&pot));
            tokens = pot["tokens"].as_u64().unwrap_or(0);
        }
        let reference = json_of(
            Command::new(crate::variants::python())
                .arg(script_dir.join("bench_llamacpp.py"))
                .arg(&file)
                .arg(&tokens_file)
                .arg(o.threads.to_string())
                .arg("1")
                .arg("f16kv"),
            "bench_llamacpp.py (pip install llama-cpp-python==0.3.36)",
        )?;
        llama.extend(seconds(&reference));
    }
    let tps = |v: &Vec<f64>| tokens as f64 / median(v.clone());
    let table = format!(
        "Command: `cargo xtask bench emulation --runs {} --threads {}`; machine: {}; \
         Qwen2.5-Coder 0.5B as stored (Q4_K_M: Q4_K, Q5_0, Q6_K, Q8_0 and F32 tensors), {} \
         challenges in batches of {BATCH}, logits for every position, median of {} runs, \
         alternating.\n\n\
         | computed by | tokens | tok/s | vs pot's f32 pass |\n|---|---|---|---|\n\
         | pot, f32 (weights dequantised) | {tokens} | {:.0} | 1.00x |\n\
         | pot, `--emulate llama.cpp` | {tokens} | {:.0} | {:.2}x |\n\
         | llama.cpp (llama-cpp-python 0.3.36, f16 KV) | {tokens} | {:.0} | {:.2}x |\n",
        o.runs,
        o.threads,
        machine(),
        BATCH * BATCHES,
        o.runs,
        tps(&exact),
        tps(&emulated),
        tps(&emulated) / tps(&exact),
        tps(&llama),
        tps(&llama) / tps(&exact),
    );
    print!("{table}");
    if o.write {
        write_between(
            &crate::fixtures::workspace_root().join("docs/BENCHMARKS.md"),
            &table,
            (
                "<!-- bench-emulation:begin -->",
                "<!-- bench-emulation:end -->",
            ),
        )?;
        eprintln!("wrote the table into docs/BENCHMARKS.md");
    }
    Ok(())
}

fn write_between_markers(path: &Path, table: &str) -> Result<()> {
    write_between(path, table, (BEGIN, END))
}

fn write_between(path: &Path, table: &str, (begin, end): (&str, &str)) -> Result<()> {
    let doc = std::fs::read_to_string(path)?;
    let (Some(a), Some(b)) = (doc.find(begin), doc.find(end)) else {
        bail!("{} lacks the {begin} / {end} markers", path.display());
    };
    let new = format!("{}{begin}\n{table}{}", &doc[..a], &doc[b..]);
    let tmp = path.with_extension("md.tmp");
    std::fs::write(&tmp, new)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
