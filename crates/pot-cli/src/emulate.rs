//! `--emulate ENGINE` and `--kv-cache`: compute a model pot runs as a serving engine computes it
//! (pot_scoring::emulate), so that the reference differs from the engine's output only by the
//! order of f32 sums.

use clap::Args;
use pot_scoring::{Arithmetic, KvCache};

#[derive(Args, Clone, Debug)]
pub struct EmulateArgs {
    /// Compute model 1 (the reference) as a serving engine does: `llama.cpp` reproduces its CPU
    /// backend's prompt batches bit for bit (8-bit partner blocks for every quantised matmul's
    /// input, ggml's integer block products and sums, an f16 KV cache; the AVX-512 x86 build;
    /// llama/mistral/qwen2 with plain RoPE); `none` is pot's own f32 arithmetic. Use it when
    /// model 2 is that engine serving the same file (docs/SERVED.md, "Engine-faithful
    /// arithmetic").
    #[arg(long, value_name = "ENGINE", default_value = "none", value_parser = parse_engine)]
    pub emulate: String,
    /// The same for a local model 2.
    #[arg(long, value_name = "ENGINE", default_value = "none", value_parser = parse_engine)]
    pub emulate_model2: String,
    /// The emulated engine's KV cache type (llama.cpp's --cache-type-k/v; f16 by default).
    #[arg(long, value_name = "TYPE", default_value = "f16", value_parser = ["f16", "f32"])]
    pub kv_cache: String,
}

fn parse_engine(name: &str) -> Result<String, String> {
    Arithmetic::parse(name, KvCache::F16)
        .map(|_| name.to_string())
        .ok_or_else(|| {
            format!(
                "unknown engine `{name}`: expected one of {}",
                Arithmetic::NAMES.join(", ")
            )
        })
}

impl EmulateArgs {
    pub fn kv(&self) -> KvCache {
        KvCache::parse(&self.kv_cache).unwrap_or_default()
    }

    /// Model 1's and model 2's arithmetic.
    pub fn arithmetic(&self) -> [Arithmetic; 2] {
        let of = |name: &str| Arithmetic::parse(name, self.kv()).unwrap_or_default();
        [of(&self.emulate), of(&self.emulate_model2)]
    }
}

/// `--emulate` alone, for commands that run one model (`pot fingerprint`).
#[derive(Args, Clone, Debug)]
pub struct EmulateOneArgs {
    /// Compute the model as a serving engine does (see `pot verify --help`): `none` or
    /// `llama.cpp`.
    #[arg(long, value_name = "ENGINE", default_value = "none", value_parser = parse_engine)]
    pub emulate: String,
    /// The emulated engine's KV cache type (f16 by default, as llama.cpp's).
    #[arg(long, value_name = "TYPE", default_value = "f16", value_parser = ["f16", "f32"])]
    pub kv_cache: String,
}

impl EmulateOneArgs {
    pub fn arithmetic(&self) -> Arithmetic {
        let kv = KvCache::parse(&self.kv_cache).unwrap_or_default();
        Arithmetic::parse(&self.emulate, kv).unwrap_or_default()
    }
}
