//! One build for every entry point: `cargo run -p pot-cli`, `cargo xtask` and maturin's build
//! of pot-python must compile every shared dependency with the features `cargo test
//! --workspace` compiles it with, or cargo compiles it (and all above it, burn included) again.
//! crates/pot-workspace-hack asks for those features; this check finds what it misses.

use std::collections::BTreeSet;

use anyhow::{Context, Result, bail};

/// The entry points built on their own (by `cargo run -p`, `cargo xtask`, maturin).
pub const ENTRY_POINTS: [&str; 3] = ["pot-cli", "pot-python", "xtask"];

/// `(package version, features)` lines of `cargo tree` for `selection`.
fn feature_sets(selection: &[&str], edges: &str) -> Result<BTreeSet<String>> {
    let out = crate::cargo()
        .arg("tree")
        .args(selection)
        .args([
            "--locked",
            "-e",
            edges,
            "--prefix",
            "none",
            "-f",
            "{p} [{f}]",
        ])
        .current_dir(crate::fixtures::workspace_root())
        .output()
        .context("cannot run cargo tree")?;
    if !out.status.success() {
        bail!(
            "cargo tree failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_end_matches(" (*)").to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

/// Per entry point, the dependencies it would build with features the workspace build does not
/// use (empty when every entry point shares the workspace's build).
pub fn differences() -> Result<Vec<(String, Vec<String>)>> {
    let workspace = feature_sets(&["--workspace"], "normal,build,dev")?;
    let mut found = Vec::new();
    for entry in ENTRY_POINTS {
        let own = feature_sets(&["-p", entry], "normal,build")?;
        let extra: Vec<String> = own.difference(&workspace).cloned().collect();
        if !extra.is_empty() {
            found.push((entry.to_string(), extra));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_entry_point_shares_the_workspace_build() {
        let found = super::differences().unwrap();
        assert!(
            found.is_empty(),
            "these dependencies would be compiled a second time with other features (add the \
             workspace's feature set to crates/pot-workspace-hack/Cargo.toml; `cargo tree \
             --workspace -e normal,build,dev -f '{{p}} [{{f}}]' -i NAME` shows it):\n{found:#?}"
        );
    }
}
