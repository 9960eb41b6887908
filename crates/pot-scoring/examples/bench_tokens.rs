//! The scorer's side of `cargo xtask bench scoring`: teacher-forced passes over the token batches
//! in a JSON file (`{"batches": [[[ids...], ...], ...]}`), `RUNS` times; prints one JSON line
//! `{"tokens": N, "padded": P, "seconds": [...], "target_logprob_sums": [...]}` (per sequence, the
//! sum of the log-probs of the text's next tokens: compares residencies). Threads:
//! `RAYON_NUM_THREADS`.
//!
//! `cargo run -p pot-scoring --example bench_tokens -- MODEL TOKENS.json RUNS [resident|streamed|int8|emulated]`
//! (`emulated`: resident, computing as llama.cpp does, `--emulate llama.cpp`).

use std::time::Instant;

use pot_formats::Model;
use pot_scoring::{Arithmetic, Backend, Engine, KvCache, Residency};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, tokens, runs, rest @ ..] = args.as_slice() else {
        eprintln!("usage: bench_tokens MODEL TOKENS.json RUNS [resident|streamed|int8|emulated]");
        std::process::exit(2);
    };
    let residency = match rest.first().map_or("resident", String::as_str) {
        "streamed" => Residency::Streamed { layers_at_once: 1 },
        "int8" => Residency::Int8,
        _ => Residency::Resident,
    };
    let model = Model::open(model).expect("model");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tokens).expect("tokens file")).expect("JSON");
    let batches: Vec<Vec<Vec<u32>>> =
        serde_json::from_value(json["batches"].clone()).expect("batches of token ids");
    let runs: usize = runs.parse().expect("runs");
    let arithmetic = match rest.first().map(String::as_str) {
        Some("emulated") => Arithmetic::LlamaCpp { kv: KvCache::F16 },
        _ => Arithmetic::Exact,
    };
    let engine = Engine::with_arithmetic(
        &model,
        Backend::Flex.device().expect("device"),
        residency,
        arithmetic,
    )
    .expect("load");
    engine.forward(&batches[0][..1]).expect("warm-up");
    let tokens: usize = batches.iter().flatten().map(Vec::len).sum();
    let padded: usize = batches
        .iter()
        .map(|b| b.len() * b.iter().map(Vec::len).max().unwrap_or(0))
        .sum();
    let (mut seconds, mut sums) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let start = Instant::now();
        for batch in &batches {
            let out = engine.forward(batch).expect("forward");
            if run == 0 {
                for (ids, lp) in batch.iter().zip(&out) {
                    let sum: f64 = (0..ids.len() - 1)
                        .map(|i| f64::from(lp.row(i)[ids[i + 1] as usize]))
                        .sum();
                    sums.push(sum);
                }
            }
        }
        seconds.push(start.elapsed().as_secs_f64());
    }
    println!(
        "{}",
        serde_json::json!({
            "tokens": tokens,
            "padded": padded,
            "seconds": seconds,
            "target_logprob_sums": sums,
        })
    );
}
