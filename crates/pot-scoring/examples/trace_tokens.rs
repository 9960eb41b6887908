//! TEMPORARY (emulation debugging): one forward pass over token ids, traced with POT_TRACE.
use pot_formats::Model;
use pot_scoring::{Arithmetic, Backend, Engine, KvCache, Residency};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model = Model::open(&args[1]).unwrap();
    let arithmetic = match args[2].as_str() {
        "exact" => Arithmetic::Exact,
        _ => Arithmetic::LlamaCpp { kv: KvCache::F16 },
    };
    let tokens: Vec<u32> = args[3..].iter().map(|t| t.parse().unwrap()).collect();
    let engine = Engine::with_arithmetic(
        &model,
        Backend::Flex.device().unwrap(),
        Residency::Resident,
        arithmetic,
    )
    .unwrap();
    let out = engine.forward(&[tokens]).unwrap();
    if let Ok(dir) = std::env::var("POT_TRACE") {
        let bytes: Vec<u8> = out[0]
            .values()
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        std::fs::write(format!("{dir}/logprobs-0.bin"), bytes).unwrap();
    }
}
