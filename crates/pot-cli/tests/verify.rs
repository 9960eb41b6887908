//! `pot verify` end to end on the real fixture models.

mod common;

use common::pot;

use pot_formats::fixtures::{QWEN_CODER_05B, SMOLLM2_135M, model_path};

fn report(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The predecessor's report keys are all present.
fn assert_report_keys(r: &serde_json::Value) {
    for key in [
        "model1",
        "model2",
        "final_decision",
        "enhanced_diff",
        "security",
        "peak_memory_gb",
        "success",
    ] {
        assert!(r.get(key).is_some(), "report lacks `{key}`");
    }
    let sec = &r["security"];
    assert!(sec["config_hash"].get("match").is_some());
    assert!(
        sec["fuzzy_hash"].get("similarity").is_some() && sec["fuzzy_hash"].get("match").is_some()
    );
}

/// SmolLM2 against its own saved fingerprint: SAME, in the quick mode's clear-case query count.
#[test]
fn model_against_its_own_fingerprint_is_same() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.hex").display().to_string();
    let fp = dir.path().join("smol.potfp").display().to_string();
    let smol = model_path(SMOLLM2_135M).display().to_string();
    let out = pot(&[
        "fingerprint",
        &smol,
        "--key-file",
        &key,
        "--create-key",
        "--mode",
        "quick",
        "-o",
        &fp,
        "-q",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let json = dir.path().join("report.json");
    let out = pot(&[
        "verify",
        "--reference",
        &fp,
        "--model2",
        &smol,
        "--key-file",
        &key,
        "--mode",
        "quick",
        "-q",
        "-o",
        &json.display().to_string(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report(&json);
    assert_report_keys(&r);
    assert_eq!(r["final_decision"], "SAME");
    assert_eq!(r["success"], true);
    assert_eq!(r["enhanced_diff"]["n_effective"], 8);
    assert_eq!(r["security"]["tokenizer"]["verdict"], "identical");
    assert!(r["peak_memory_gb"].as_f64().unwrap() > 0.0);
    assert_eq!(r["provenance"]["identical_weights"], true);
    assert_eq!(
        r["security"]["config_hash"]["hashes"][0],
        serde_json::Value::Null
    );

    // The transcript root checks out, and tampering with one recorded score breaks it.
    let j = json.display().to_string();
    let ok = pot(&["provenance", "verify", &j]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let mut tampered = r.clone();
    tampered["trace"][3]["score"] = serde_json::json!(0.5);
    let t = dir.path().join("tampered.json");
    std::fs::write(&t, serde_json::to_string(&tampered).unwrap()).unwrap();
    assert_eq!(
        pot(&["provenance", "verify", &t.display().to_string()])
            .status
            .code(),
        Some(1)
    );

    // The same fingerprint under another run id is refused with advice, not misused.
    let out = pot(&[
        "verify",
        "--reference",
        &fp,
        "--model2",
        &smol,
        "--key-file",
        &key,
        "--mode",
        "quick",
        "--run-id",
        "other",
        "-q",
    ]);
    assert_eq!(out.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--run-id"));
}

/// Different tokenizers: DIFFERENT for that stated reason, without scoring and without crashing.
#[test]
fn different_tokenizers_are_different_without_scoring() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let out = pot(&[
        "verify",
        "--model1",
        &model_path(SMOLLM2_135M).display().to_string(),
        "--model2",
        &model_path(QWEN_CODER_05B).display().to_string(),
        "--mode",
        "quick",
        "-q",
        "-o",
        &json.display().to_string(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report(&json);
    assert_report_keys(&r);
    assert_eq!(r["final_decision"], "DIFFERENT");
    assert_eq!(r["security"]["tokenizer"]["verdict"], "incompatible");
    assert_eq!(r["security"]["config_hash"]["match"], false);
    assert_eq!(r["security"]["fuzzy_hash"]["match"], false);
    assert!(r["reason"].as_str().unwrap().contains("tokenizers differ"));
    assert_eq!(r["trace"].as_array().unwrap().len(), 0);
}

#[test]
fn a_missing_model_fails_with_a_load_error_report() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let out = pot(&[
        "verify",
        "--model1",
        "/nonexistent/a.gguf",
        "--model2",
        "/nonexistent/b.gguf",
        "-q",
        "-o",
        &json.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("model loading failed"));
    let r = report(&json);
    assert_eq!(r["success"], false);
    assert!(r["error"].as_str().unwrap().contains("does not exist"));
}

#[test]
fn merkle_cli_root_proof_verify_and_diff() {
    let dir = tempfile::tempdir().unwrap();
    let smol = model_path(SMOLLM2_135M).display().to_string();
    let root = pot(&["merkle", "root", &smol]);
    assert!(root.status.success());
    let root = String::from_utf8_lossy(&root.stdout).trim().to_string();
    assert_eq!(root.len(), 64);

    let proof = pot(&[
        "merkle",
        "proof",
        &smol,
        "model.layers.3.mlp.up_proj.weight",
    ]);
    assert!(proof.status.success());
    let proof_path = dir.path().join("proof.json");
    std::fs::write(&proof_path, &proof.stdout).unwrap();
    let p = proof_path.display().to_string();
    assert_eq!(
        pot(&["merkle", "verify", &p, "--root", &root])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        pot(&["merkle", "verify", &p, "--root", &"ab".repeat(32)])
            .status
            .code(),
        Some(1)
    );

    let missing = pot(&["merkle", "proof", &smol, "no.such.tensor"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("pot inspect --json"));

    let qwen = model_path(QWEN_CODER_05B).display().to_string();
    let diff = pot(&["merkle", "diff", &smol, &qwen, "--json"]);
    assert_eq!(diff.status.code(), Some(1));
    let d: serde_json::Value = serde_json::from_slice(&diff.stdout).unwrap();
    assert!(
        d["only_in_second"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "lm_head.weight")
    );
    assert_eq!(
        pot(&["merkle", "diff", &smol, &smol]).status.code(),
        Some(0)
    );
}
