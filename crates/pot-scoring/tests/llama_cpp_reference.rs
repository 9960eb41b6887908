//! The forward pass against llama.cpp on the same F32 weights, F32 KV cache, flash attention off
//! (fixtures/llamacpp-reference/*-f32kv-logprobs.json, made by make_f32_reference.py there).

use std::path::PathBuf;

use pot_formats::Model;
use pot_formats::fixtures::{GEMMA3_270M, QWEN_CODER_05B, SMOLLM2_135M, model_path};
use pot_scoring::{Backend, Engine};
use serde_json::Value;

struct Agreement {
    positions: usize,
    top1_agree: usize,
    max_abs_diff: f64,
}

fn compare(model_file: &str, reference: &str) -> Agreement {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/llamacpp-reference")
        .join(reference);
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let model = Model::open(model_path(model_file)).unwrap();
    let engine = Engine::load(&model, Backend::Flex.device().unwrap()).unwrap();
    let texts = reference["texts"].as_array().unwrap();
    let batch: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| {
            t["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect()
        })
        .collect();
    // Also checks that our tokenizer + BOS policy reproduce llama.cpp's ids for these texts.
    let tokenizer = model.tokenizer().unwrap();
    for (t, ids) in texts.iter().zip(&batch) {
        assert_eq!(
            &tokenizer
                .encode_prompt(t["text"].as_str().unwrap())
                .unwrap(),
            ids
        );
    }
    let out = engine.forward(&batch).unwrap();
    let mut agreement = Agreement {
        positions: 0,
        top1_agree: 0,
        max_abs_diff: 0.0,
    };
    for (t, lp) in texts.iter().zip(&out) {
        for (i, pos) in t["positions"].as_array().unwrap().iter().enumerate() {
            let row = lp.row(i);
            let top20 = pos["top20"].as_array().unwrap();
            let ref_top = top20[0][0].as_u64().unwrap() as usize;
            let our_top = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap()
                .0;
            agreement.positions += 1;
            agreement.top1_agree += usize::from(our_top == ref_top);
            for pair in top20 {
                let (id, want) = (
                    pair[0].as_u64().unwrap() as usize,
                    pair[1].as_f64().unwrap(),
                );
                agreement.max_abs_diff = agreement.max_abs_diff.max((row[id] as f64 - want).abs());
            }
            let next = pos["next_id"].as_u64().unwrap() as usize;
            let want = pos["next_logprob"].as_f64().unwrap();
            agreement.max_abs_diff = agreement.max_abs_diff.max((row[next] as f64 - want).abs());
        }
    }
    eprintln!(
        "{model_file}: {} positions, top-1 agreement {}/{}, max |log-prob diff| {:.2e}",
        agreement.positions, agreement.top1_agree, agreement.positions, agreement.max_abs_diff
    );
    agreement
}

#[test]
fn smollm2_matches_llama_cpp() {
    let a = compare(SMOLLM2_135M, "smollm2-135m-f32kv-logprobs.json");
    assert!(a.positions >= 200);
    assert_eq!(a.top1_agree, a.positions);
    assert!(a.max_abs_diff <= 1e-3, "max abs diff {}", a.max_abs_diff);
}

#[test]
fn qwen_coder_matches_llama_cpp() {
    let a = compare(QWEN_CODER_05B, "qwen2.5-coder-0.5b-f32kv-logprobs.json");
    assert!(a.positions >= 200);
    assert_eq!(a.top1_agree, a.positions);
    assert!(a.max_abs_diff <= 1e-3, "max abs diff {}", a.max_abs_diff);
}

/// Gemma 3 270M: the GGUF path of gemma3 (llama.cpp's names, its `1 + w` norms, the fixed
/// sliding-layer pattern and local RoPE base) and its SentencePiece tokenizer (the ids are
/// llama.cpp's, checked in `compare`). Against transformers on the same dequantised weights
/// (fixtures/transformers-parity/gemma3_270m.py) the bound is the usual f32 one; llama.cpp's
/// CPU GELU reads an f16 table (`GGML_GELU_FP16`), so against it agreement is top-1 and ~2e-2
/// (transformers itself differs from llama.cpp by the same 2.1e-2).
#[test]
fn gemma3_matches_transformers_and_llama_cpp() {
    let a = compare(GEMMA3_270M, "gemma3-270m-transformers-logprobs.json");
    assert!(a.positions >= 200);
    assert_eq!(a.top1_agree, a.positions);
    assert!(a.max_abs_diff <= 1e-4, "max abs diff {}", a.max_abs_diff);
    let a = compare(GEMMA3_270M, "gemma3-270m-f32kv-logprobs.json");
    assert_eq!(a.top1_agree, a.positions);
    assert!(a.max_abs_diff <= 3e-2, "max abs diff {}", a.max_abs_diff);
}
