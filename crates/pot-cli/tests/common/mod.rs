//! Running the `pot` binary from tests, as a user would (no `$POT_KEY` leaking in).

use std::process::{Command, Output};

pub fn pot(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pot"))
        .args(args)
        .env_remove("POT_KEY")
        .output()
        .unwrap()
}
