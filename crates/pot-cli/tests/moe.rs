//! A mixture-of-experts model larger than its memory budget: verified against itself streamed
//! layer by layer, each expert read only when a token routes to it, SAME, with the process's
//! peak memory within the budget.

mod common;

use common::pot;
use pot_formats::convert::OutputDType;
use pot_formats::fixtures::{SMOLLM2_135M, model_path};
use pot_formats::variants::write_random_model;
use pot_formats::{Architecture, Model, ModelConfig};
use serde_json::Value;

const GB: f64 = 1e9;

#[test]
fn a_mixture_of_experts_streams_within_a_budget_smaller_than_its_weights() {
    // Mixtral-shaped: 4 layers of 16 experts (2 per token), hidden 768, expert MLP 3072, and
    // SmolLM2's tokenizer (vocabulary 49,152): 0.53 B parameters, 1.06 GB as F16, 2.1 GB f32.
    let smol = Model::open(model_path(SMOLLM2_135M)).unwrap();
    let config = ModelConfig {
        architecture: Architecture::Mixtral,
        num_experts: 16,
        experts_per_token: 2,
        vocab_size: smol.config().vocab_size,
        bos_token_id: smol.config().bos_token_id,
        eos_token_id: smol.config().eos_token_id,
        ..ModelConfig::llama(768, 3072, 4, 12, 4, 0)
    };
    let dir = tempfile::tempdir().unwrap();
    let moe = dir.path().join("mixtral-tiny");
    write_random_model(
        &moe,
        &config,
        &smol.tokenizer().unwrap(),
        OutputDType::F16,
        "pot-cli tests/moe.rs",
        |_, _| {},
    )
    .unwrap();
    let model = Model::open(&moe).unwrap();
    assert_eq!(model.config(), &config);
    let (file, f32_weights) = (
        model.file_bytes() as f64,
        model.description().weight_bytes(4.0) as f64,
    );
    let budget = 0.9;
    assert!(
        budget * GB < file && file < f32_weights,
        "{file} {f32_weights}"
    );

    let report = dir.path().join("report.json");
    let moe = moe.display().to_string();
    let key = common::key_file(dir.path(), 0x5a);
    let out = pot(&[
        "verify",
        "--model1",
        &moe,
        "--model2",
        &moe,
        "--mode",
        "quick",
        "--key-file",
        &key,
        "--max-memory",
        &budget.to_string(),
        "--enable-offload",
        "-q",
        "-o",
        &report.display().to_string(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["final_decision"], "SAME");
    assert_eq!(
        r["enhanced_diff"]["decision"], "SAME",
        "statistical verdict"
    );
    let plan = &r["memory"]["plan"];
    assert_eq!(plan["model1"]["strategy"]["kind"], "streamed", "{plan}");
    assert!(
        plan["execution"]
            .as_str()
            .unwrap()
            .starts_with("interleaved"),
        "{plan}"
    );
    let peak = r["memory"]["peak_rss_bytes"].as_f64().unwrap();
    println!(
        "mixture: file {:.2} GB, f32 {:.2} GB, budget {budget} GB, peak RSS {:.3} GB, {} queries",
        file / GB,
        f32_weights / GB,
        peak / GB,
        r["enhanced_diff"]["n_effective"]
    );
    assert!(
        peak <= budget * GB,
        "peak {peak} over the {budget} GB budget"
    );
}
