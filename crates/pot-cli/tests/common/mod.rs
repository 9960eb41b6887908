//! Running the `pot` binary from tests, as a user would (no `$POT_KEY` leaking in).

use std::process::{Command, Output};

#[allow(dead_code)] // not every test binary uses it
pub fn pot(args: &[&str]) -> Output {
    pot_env(args, &[])
}

/// `pot` with extra environment variables.
#[allow(dead_code)] // not every test binary uses it
pub fn pot_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pot"))
        .args(args)
        .env_remove("POT_KEY")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// A Python that imports `modules` (e.g. "torch, transformers"): `$POT_PYTHON`, the venv
/// `~/.cache/pot/pyenv`, or `python3`; `None` (the caller skips with a message) when none does.
#[allow(dead_code)] // not every test binary uses it
pub fn python_with(modules: &str) -> Option<std::path::PathBuf> {
    let venv = std::env::var_os("HOME")
        .map(|h| std::path::PathBuf::from(h).join(".cache/pot/pyenv/bin/python"));
    let candidates = std::env::var_os("POT_PYTHON")
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain(venv.filter(|v| v.is_file()))
        .chain(std::iter::once("python3".into()));
    for python in candidates {
        let ok = Command::new(&python)
            .args(["-c", &format!("import {modules}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(python);
        }
    }
    None
}
