//! No code: see Cargo.toml (feature unification for the workspace's entry points).
