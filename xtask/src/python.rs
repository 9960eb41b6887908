//! `cargo xtask pytest`: the Python package (python/) installed into a virtual environment as a
//! user installs it (`pip install ./python`, built by maturin), then its pytest suite on the
//! real fixture. Part of the README's test command.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::fixtures::workspace_root;

/// Where the test environment lives: beside the fixture cache, reused between runs.
fn venv_dir() -> PathBuf {
    pot_formats::fixtures::cache_dir()
        .parent()
        .map(|p| p.join("pytest-venv"))
        .unwrap_or_else(|| PathBuf::from("target/pytest-venv"))
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot run {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// `$PATH` with `dir` first.
fn path_with(dir: &Path) -> std::ffi::OsString {
    let rest = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&rest)))
        .unwrap_or(rest)
}

pub fn pytest(args: &[String]) -> Result<()> {
    let root = workspace_root();
    let venv = venv_dir();
    let python = venv.join("bin/python");
    if !python.is_file() {
        eprintln!("pytest: creating {}", venv.display());
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "python3 -m venv (Python 3 with venv is needed: apt-get install python3-venv)",
        )?;
    }
    run(
        Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "maturin>=1.9,<2",
            "pytest>=7",
        ]),
        "pip install maturin pytest",
    )?;
    // The same target directory as `cargo test`, so maturin reuses what it compiled.
    let target = crate::target_dir();
    eprintln!(
        "pytest: pip install ./python (maturin, target directory {})",
        target.display()
    );
    // --no-build-isolation: maturin from the environment above, not downloaded per build.
    run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-build-isolation",
                "--force-reinstall",
                "--no-deps",
            ])
            .arg(root.join("python"))
            .env("CARGO_TARGET_DIR", &target)
            // maturin's build backend runs the `maturin` of the environment by name.
            .env("PATH", path_with(&venv.join("bin"))),
        "pip install ./python",
    )?;
    // Run from the tests' directory so `import pot` finds the installed package, not the
    // source tree (which lacks the compiled module).
    let tests: &Path = &root.join("python/tests");
    run(
        Command::new(&python)
            .args(["-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"])
            .args(args)
            .arg(tests)
            .current_dir(tests),
        "pytest python/tests",
    )
}
