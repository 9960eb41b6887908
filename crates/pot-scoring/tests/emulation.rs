//! `--emulate llama.cpp` against llama.cpp itself: the log-probs llama.cpp computed on fixed
//! token sequences (fixtures/emulation/llamacpp-logprobs.json, recorded by record.py there with
//! llama-cpp-python 0.3.36 on an AVX-512 x86-64 CPU) must come out of pot's emulated pass to
//! within the rounding of the final log-softmax (pot's f32 against the recorder's f64 of the same
//! logits, ~1e-6). An emulation that differed in any rounding upstream would be off by ~1e-2
//! (one flipped 8-bit input is a whole quantisation step; docs/SERVED.md), and pot's own f32
//! pass is checked to be that far off, so the test can fail.
//!
//! The deployments are the fixture's weights quantised by llama.cpp's quantiser; pot's own
//! quantiser writes the same bytes (crates/pot-formats/tests/quantize_file.rs), so the files
//! are made here with it: the SmolLM2 fixture (Q4_1) dequantised to F32, then quantised.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use pot_formats::Model;
use pot_formats::fixtures::{QWEN_CODER_05B, SMOLLM2_135M, model_path};
use pot_formats::quantize::FileType;
use pot_formats::quantize_file::{QuantizeOptions, quantize_gguf};
use pot_scoring::{Arithmetic, Backend, Engine, KvCache, Residency};
use serde_json::Value;

fn reference() -> &'static Value {
    static REFERENCE: OnceLock<Value> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/emulation/llamacpp-logprobs.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    })
}

/// The SmolLM2 fixture as `ftype`, made once per test run in a temporary directory.
fn smollm2_as(ftype: &str) -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap()).path();
    let f32_path = dir.join("smollm2.F32.gguf");
    static F32: OnceLock<()> = OnceLock::new();
    F32.get_or_init(|| quantize(&model_path(SMOLLM2_135M), "f32", &f32_path));
    let out = dir.join(format!("smollm2.{ftype}.gguf"));
    quantize(&f32_path, ftype, &out);
    out
}

fn quantize(src: &Path, ftype: &str, out: &Path) {
    let ftype: FileType = ftype.parse().unwrap();
    let options = QuantizeOptions {
        allow_requantize: true,
    };
    quantize_gguf(src, ftype, out, options, |_, _| {}).unwrap();
}

/// Largest difference between pot's log-probs and llama.cpp's over the recorded top-20 of every
/// position of every recorded sequence.
fn worst_difference(name: &str, file: &Path, arithmetic: Arithmetic) -> f64 {
    let model = Model::open(file).unwrap();
    let engine = Engine::with_arithmetic(
        &model,
        Backend::Flex.device().unwrap(),
        Residency::Resident,
        arithmetic,
    )
    .unwrap();
    let mut worst = 0f64;
    for seq in reference()["models"][name].as_array().unwrap() {
        let tokens: Vec<u32> = seq["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap() as u32)
            .collect();
        let out = &engine.forward(std::slice::from_ref(&tokens)).unwrap()[0];
        for (pos, (ids, lps)) in seq["top_ids"]
            .as_array()
            .unwrap()
            .iter()
            .zip(seq["top_logprobs"].as_array().unwrap())
            .enumerate()
        {
            let row = out.row(pos);
            for (id, lp) in ids.as_array().unwrap().iter().zip(lps.as_array().unwrap()) {
                let ours = f64::from(row[id.as_u64().unwrap() as usize]);
                worst = worst.max((ours - lp.as_f64().unwrap()).abs());
            }
        }
    }
    worst
}

const LLAMA_CPP: Arithmetic = Arithmetic::LlamaCpp { kv: KvCache::F16 };
/// Reached by an exact emulation (the final log-softmax's rounding); not by an inexact one.
const EXACT: f64 = 2e-5;

fn check(name: &str, file: &Path) {
    let emulated = worst_difference(name, file, LLAMA_CPP);
    println!("{name}: emulated llama.cpp within {emulated:.2e} of llama.cpp");
    assert!(
        emulated < EXACT,
        "{name}: emulated log-probs {emulated:.3e} from llama.cpp's"
    );
}

#[test]
fn emulation_reproduces_llama_cpp_on_the_fixtures_files() {
    check("smollm2-q4_1", &model_path(SMOLLM2_135M));
    check("qwen2-q4_k_m", &model_path(QWEN_CODER_05B));
}

#[test]
fn the_f32_pass_is_not_within_the_emulation_bound() {
    // The test above can fail: pot's own arithmetic is far from llama.cpp's on a quantised file.
    let exact = worst_difference("smollm2-q4_1", &model_path(SMOLLM2_135M), Arithmetic::Exact);
    println!("smollm2-q4_1: pot's f32 pass within {exact:.2e} of llama.cpp");
    assert!(exact > 100.0 * EXACT, "{exact}");
}

#[test]
fn emulation_reproduces_llama_cpp_on_quantised_deployments() {
    for ftype in ["f32", "f16", "q8_0", "q6_k", "q4_k_m", "q4_0"] {
        check(&format!("smollm2-{ftype}"), &smollm2_as(ftype));
    }
}
