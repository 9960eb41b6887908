//! Where `cargo xtask fixtures` caches the real test models: `$POT_FIXTURES`, else
//! `$XDG_CACHE_HOME/pot/fixtures`, else `~/.cache/pot/fixtures`. Shared by the xtask and tests.

use std::path::PathBuf;

pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("POT_FIXTURES") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("pot").join("fixtures")
}

/// File names of the fixture models (see fixtures/models.json).
pub const SMOLLM2_135M: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const QWEN_CODER_05B: &str = "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf";
pub const QWEN_CODER_15B: &str = "Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf";
pub const GEMMA3_270M: &str = "gemma-3-270m-Q4_K_M.gguf";

/// Path of a cached fixture model.
///
/// # Panics
/// When the model is not cached: tests that need real models fail loudly rather than skip.
pub fn model_path(file: &str) -> PathBuf {
    let path = cache_dir().join(file);
    assert!(
        path.is_file(),
        "fixture model {} is missing: run `cargo xtask fixtures` first",
        path.display()
    );
    path
}
