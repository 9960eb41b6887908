//! Repository chores: `cargo xtask fixtures | golden | bench`. Run `cargo xtask help`.

mod bench;
mod bigmodel;
mod detection;
#[cfg(test)]
mod features;
mod fixtures;
mod fuzz;
mod python;
mod simulate;
mod variants;

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

const HELP: &str = "\
cargo xtask <task>

  fixtures [NAME...]     fetch the real test models (fixtures/models.json) into the cache,
                         check size and SHA-256, print their paths; no-op when already valid
  fixtures --path NAME   print the cached path of one model (fetching it if needed)
  demo [ARGS...]         fetch SmolLM2-135M (cached, hash-checked) and run `pot verify` of it
                         against itself (quick mode); extra ARGS go to `pot verify`
  variants [NAME...]     write modified copies of SmolLM2 (encodings, noise, low-rank updates,
                         fine-tunes) under $POT_FIXTURES/variants (fine-tunes need torch +
                         transformers: fixtures/variants/requirements.txt)
  detection [PAIR...] [--no-write]
                         score every variant against SmolLM2 (`pot calibrate`), replay each
                         mode and tolerance, write the detection table into docs/STATISTICS.md
  fuzz TARGET [--time S] run a libFuzzer target of fuzz/ (cargo-fuzz), seeded with real
                         inputs: gguf, config_json, scores_and_keys, merkle_proof
  pytest [ARGS...]       install the Python package (pip install ./python, maturin) into a venv
                         beside the fixture cache and run its pytest suite (python/tests)
  simulate [STREAMS]     Monte Carlo tables for docs/STATISTICS.md (default 4000 streams)
  bigmodel [--max-memory GB] [--write-only]
                         write a LLaMA-7B-shaped F16 model (~13.9 GB) and a copy with one
                         modified layer into $POT_FIXTURES/bigmodel, verify it against itself
                         and the copy under --max-memory 4 --enable-offload (tens of minutes)
  golden                 run every insta snapshot test (`golden_*`); a changed snapshot fails
  golden --accept        run them and overwrite changed snapshots (review with `git diff`)
  bench scoring [--runs N] [--threads N] [--no-write]
                         tokens/s of pot's scorer vs llama.cpp on the same F32 weights and
                         tokens; writes the table into docs/BENCHMARKS.md (needs python3 with
                         gguf==0.19.0 and llama-cpp-python==0.3.36)
";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((task, rest)) = args.split_first() else {
        print!("{HELP}");
        return Ok(());
    };
    match task.as_str() {
        "fixtures" => fixtures::run(rest),
        "golden" => golden(rest),
        "simulate" => simulate::run(rest),
        "bench" => bench::run(rest),
        "demo" => demo(rest),
        "bigmodel" => bigmodel::run(rest),
        "variants" => variants::run(rest),
        "detection" => detection::run(rest),
        "fuzz" => fuzz::run(rest),
        "pytest" => python::pytest(rest),
        "help" | "--help" | "-h" => {
            print!("{HELP}");
            Ok(())
        }
        other => bail!("unknown task `{other}`\n\n{HELP}"),
    }
}

/// Snapshot tests are the tests named `golden_*`; insta in CI mode fails on any change.
fn golden(args: &[String]) -> Result<()> {
    let accept = match args {
        [] => false,
        [flag] if flag == "--accept" || flag == "--review" => true,
        _ => bail!("usage: cargo xtask golden [--accept]"),
    };
    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--", "golden_"]);
    if accept {
        cmd.env("INSTA_UPDATE", "always").env_remove("CI");
    } else {
        cmd.env("INSTA_UPDATE", "no").env("CI", "true");
    }
    let status = cmd.status().context("cannot run cargo test")?;
    if !status.success() {
        bail!(
            "snapshot tests failed{}",
            if accept {
                ""
            } else {
                "; if the change is intended, run `cargo xtask golden --accept` and review `git diff`"
            }
        );
    }
    if accept {
        Command::new("git")
            .args(["status", "--short", "--", "*.snap"])
            .status()
            .ok();
    }
    Ok(())
}

/// The cargo that runs this task (`$CARGO`), or `cargo` from the path.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The workspace's target directory: `$CARGO_TARGET_DIR`, else `target/` in the workspace.
pub fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| fixtures::workspace_root().join("target"))
}

/// The `pot` binary, built as `cargo run -p pot-cli` builds it: the dependencies are the ones
/// `cargo test --workspace` compiles (crates/pot-workspace-hack unifies their features), so
/// neither command compiles them twice.
fn built_pot() -> Result<std::path::PathBuf> {
    let built = cargo()
        .args(["build", "-p", "pot-cli", "--quiet"])
        .status()
        .context("cannot run cargo")?;
    if !built.success() {
        bail!("the build failed (cargo build -p pot-cli)");
    }
    Ok(target_dir().join("debug").join("pot"))
}

/// The README's main job: a real verification on the smallest fixture model.
fn demo(args: &[String]) -> Result<()> {
    let model = fixtures::ensure_named("smollm2-135m")?;
    let model = model.display().to_string();
    let mut cmd = Command::new(built_pot()?);
    cmd.args(["verify", "--model1", &model, "--model2", &model]);
    if !args.iter().any(|a| a == "--mode") {
        cmd.args(["--mode", "quick"]);
    }
    if !args.iter().any(|a| a == "--key-file") {
        // A replayable run: the demo's key is kept in the fixture cache.
        let key = pot_formats::fixtures::cache_dir().join("demo.key");
        cmd.arg("--key-file").arg(key).arg("--create-key");
    }
    cmd.args(args);
    let status = cmd.status().context("cannot run cargo")?;
    // pot's exit code is the verdict (0 SAME, 1 DIFFERENT, 3 UNDECIDED): pass it on.
    std::process::exit(status.code().unwrap_or(1));
}
