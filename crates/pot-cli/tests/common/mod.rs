//! Running the `pot` binary from tests, as a user would (no `$POT_KEY` leaking in).

use std::process::{Command, Output};

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
