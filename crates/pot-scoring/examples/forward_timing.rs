//! Times the teacher-forced forward pass and the fingerprint summary on a model:
//! `cargo run -p pot-scoring --example forward_timing -- MODEL [BATCH] [BATCHES] [resident|streamed|int8]`.
//! Peak memory: run the built example under `/usr/bin/time -v`.

use std::time::Instant;

use pot_challenge_kdf::{ChallengeSpec, MasterKey, generate};
use pot_formats::Model;
use pot_scoring::score::summarise_position;
use pot_scoring::{Backend, DEFAULT_TOP_K, Engine, Residency};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = Model::open(&args[0]).expect("model");
    let batch: usize = args.get(1).map_or(8, |s| s.parse().expect("batch"));
    let batches: usize = args.get(2).map_or(2, |s| s.parse().expect("batches"));
    let residency = match args.get(3).map_or("resident", String::as_str) {
        "resident" => Residency::Resident,
        "streamed" => Residency::Streamed { layers_at_once: 1 },
        "int8" => Residency::Int8,
        other => panic!("unknown residency {other}: resident, streamed or int8"),
    };
    let tok = model.tokenizer().expect("tokenizer");
    let t = Instant::now();
    let engine = Engine::with_residency(&model, Backend::Flex.device().expect("device"), residency)
        .expect("load");
    println!("{residency:?}: load {:.2} s", t.elapsed().as_secs_f64());
    let key = MasterKey::from_bytes([7; 32]);
    let challenges = generate(
        &key,
        &ChallengeSpec::new("timing", (batch * batches) as u64),
    );
    let (mut forward_s, mut summary_s, mut tokens, mut padded) = (0.0, 0.0, 0, 0);
    for chunk in challenges.chunks(batch) {
        let ids: Vec<Vec<u32>> = chunk
            .iter()
            .map(|c| tok.encode_prompt(&c.prompt).expect("encode"))
            .collect();
        tokens += ids.iter().map(Vec::len).sum::<usize>();
        padded += ids.len() * ids.iter().map(Vec::len).max().unwrap_or(0);
        let t = Instant::now();
        let out = engine.forward(&ids).expect("forward");
        forward_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        for (lp, ids) in out.iter().zip(&ids) {
            for i in 4..ids.len() - 1 {
                std::hint::black_box(summarise_position(lp.row(i), DEFAULT_TOP_K, ids[i + 1]));
            }
        }
        summary_s += t.elapsed().as_secs_f64();
    }
    let params = model.description().parameter_count as f64;
    println!(
        "batch {batch}: {tokens} tokens ({padded} padded) forward {forward_s:.2} s = {:.0} tok/s, ~{:.1} GFLOP/s (2 x params per padded token); summaries {summary_s:.2} s",
        tokens as f64 / forward_s,
        2.0 * params * padded as f64 / forward_s / 1e9
    );
}
