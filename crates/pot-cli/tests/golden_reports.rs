//! End-to-end `pot verify` runs on the real fixture models, one per evidence case of the
//! verification issue. Each report is validated against the JSON Schema of docs/REPORT.md and
//! snapshotted with machine-dependent values (paths, timings, memory readings, budget) redacted
//! and floats rounded; `cargo xtask golden` runs them, `--accept` updates them.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use common::pot;
use pot_formats::fixtures::{
    GEMMA3_270M, QWEN_CODER_05B, QWEN_CODER_15B, SMOLLM2_135M, model_path,
};
use pot_orchestrator::schema::validate_report;
use serde_json::Value;

/// One model run at a time: the tests share two cores and the Qwen pair needs ~10 GB.
static HEAVY: Mutex<()> = Mutex::new(());

fn path_of(name: &str) -> String {
    model_path(name).display().to_string()
}

/// Runs `pot verify` with `args` plus a fixed key, report file and HTML page; returns exit code
/// and report. The page is checked in a headless browser where one exists.
fn verify(dir: &Path, args: &[&str]) -> (Option<i32>, Value) {
    let report = dir.join("report.json");
    let page = dir.join("report.html");
    let key = common::key_file(dir, 0x5a);
    let mut all = vec!["verify", "--key-file", &key, "-q"];
    let (report_arg, page_arg) = (report.display().to_string(), page.display().to_string());
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", &report_arg, "--html", &page_arg]);
    let out = pot(&all);
    let text = std::fs::read_to_string(&report).unwrap_or_else(|e| {
        panic!(
            "no report ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let value: Value = serde_json::from_str(&text).unwrap();
    let errors = validate_report(&value);
    assert!(errors.is_empty(), "report violates the schema: {errors:#?}");
    check_page(&page, &value);
    (out.status.code(), value)
}

/// The HTML page of a report: self-contained (no reference to any other resource), showing the
/// verdict and the summary `pot verify` printed, the same page `pot report --html` draws from
/// the JSON, and, in headless Chromium, rendered with no console message.
fn check_page(page: &Path, report: &Value) {
    let html = std::fs::read_to_string(page).expect("--html wrote the page");
    for external in ["src=", "href=", "url(", "@import", "<script", "<link"] {
        assert!(!html.contains(external), "the page refers to `{external}`");
    }
    let verdict = report["final_decision"].as_str().unwrap();
    assert!(html.contains(&format!("class=\"verdict {verdict}\"")));
    let redrawn = page.with_extension("redrawn.html");
    let out = pot(&[
        "report",
        &page.with_extension("json").display().to_string(),
        "--html",
        &redrawn.display().to_string(),
    ]);
    let expected_code = match verdict {
        "SAME" => 0,
        "DIFFERENT" => 1,
        _ => 3,
    };
    assert_eq!(out.status.code(), Some(expected_code));
    assert_eq!(std::fs::read_to_string(&redrawn).unwrap(), html);
    if report["trace"].as_array().is_some_and(|t| !t.is_empty()) {
        assert!(html.contains("aria-label=\"confidence sequence over queries\""));
    }
    let Some(browser) = common::browser() else {
        eprintln!(
            "skipping the browser check of {}: no chromium here (apt-get install chromium)",
            page.display()
        );
        return;
    };
    let console = common::screenshot(&browser, page, &page.with_extension("png"));
    assert!(console.is_empty(), "console messages: {console:#?}");
}

/// The browser check above can fail: a page that logs to the console is seen.
#[test]
fn the_browser_check_sees_console_messages() {
    let Some(browser) = common::browser() else {
        eprintln!("skipping: no chromium here (apt-get install chromium)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("bad.html");
    let filler = "<p>filler text so the screenshot has content</p>".repeat(200);
    std::fs::write(
        &page,
        format!("<html><body>{filler}<script>console.error('boom-42')</script></body></html>"),
    )
    .unwrap();
    let console = common::screenshot(&browser, &page, &dir.path().join("bad.png"));
    assert!(
        console.iter().any(|l| l.contains("boom-42")),
        "{console:#?}"
    );
}

fn snapshot(name: &str, report: &Value) {
    insta::assert_json_snapshot!(name, report, {
        ".model1" => "[path]",
        ".model2" => "[path]",
        ".timings_s" => "[timings]",
        ".peak_memory_gb" => "[measured]",
        ".security.fuzzy_hash.seconds" => "[seconds]",
        ".memory.events[].at_s" => "[s]",
        ".memory.events[].rss_bytes" => "[measured]",
        ".memory.events[].system_used_percent" => "[measured]",
        ".memory.samples" => "[count]",
        ".memory.series" => "[measured]",
        ".trace[].mean" => insta::rounded_redaction(4),
        ".trace[].mean_clipped" => insta::rounded_redaction(4),
        ".memory.peak_rss_bytes" => "[measured]",
        ".memory.plan.*.budget_bytes" => "[machine]",
        ".memory.plan.*.available_bytes" => "[machine]",
        ".trace[].score" => insta::rounded_redaction(4),
        ".trace[].ci_lower" => insta::rounded_redaction(4),
        ".trace[].ci_upper" => insta::rounded_redaction(4),
        ".trace[].candidate.cross_entropy_diff" => insta::rounded_redaction(4),
        ".trace[].candidate.top1_agreement" => insta::rounded_redaction(4),
        ".enhanced_diff.effect_size" => insta::rounded_redaction(4),
        ".enhanced_diff.mean_clipped" => insta::rounded_redaction(4),
        ".enhanced_diff.ci_lower" => insta::rounded_redaction(4),
        ".enhanced_diff.ci_upper" => insta::rounded_redaction(4),
        ".provenance.transcript_root" => "[depends on rounded scores]",
    });
}

fn decision(r: &Value) -> (&str, &Value) {
    (
        r["final_decision"].as_str().unwrap(),
        &r["enhanced_diff"]["n_effective"],
    )
}

#[test]
fn golden_report_smollm2_against_itself_in_every_mode() {
    let _one = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let smol = path_of(SMOLLM2_135M);
    for mode in ["quick", "audit", "extended"] {
        let dir = tempfile::tempdir().unwrap();
        let (code, r) = verify(
            dir.path(),
            &["--model1", &smol, "--model2", &smol, "--mode", mode],
        );
        assert_eq!(code, Some(0), "{mode}");
        assert_eq!(r["final_decision"], "SAME", "{mode}");
        assert_eq!(
            r["enhanced_diff"]["decision"], "SAME",
            "{mode}: statistical verdict"
        );
        assert_eq!(r["success"], true);
        assert!(
            r["memory"]["plan"]["execution"]
                .as_str()
                .unwrap()
                .starts_with("side by side")
        );
        snapshot(&format!("smollm2_self_{mode}"), &r);
    }
}

#[test]
fn golden_report_smollm2_gguf_against_its_f32_conversion() {
    let _one = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let smol = path_of(SMOLLM2_135M);
    let f32_dir = dir.path().join("smollm2-f32");
    let out = pot(&["convert", &smol, "--out", &f32_dir.display().to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, r) = verify(
        dir.path(),
        &[
            "--model1",
            &smol,
            "--model2",
            &f32_dir.display().to_string(),
            "--mode",
            "quick",
        ],
    );
    assert_eq!(code, Some(0));
    // Not byte-identical (Q4_1 blocks vs f32), so the verdict is the statistical one.
    assert_eq!(r["provenance"]["identical_weights"], false);
    assert_eq!(decision(&r), ("SAME", &Value::from(8)));
    snapshot("smollm2_gguf_vs_f32", &r);
}

/// The smallest modification the default tolerance must catch (docs/STATISTICS.md): a rank-4
/// update of every attention projection, 2 % of each weight's norm, is DIFFERENT in QUICK, and
/// the report names the touched tensors.
#[test]
fn golden_report_smollm2_against_a_low_rank_update_is_different() {
    use pot_formats::variants::{ATTENTION, Edit, seed_of, write_variant};
    let _one = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let smol = path_of(SMOLLM2_135M);
    let variant = dir.path().join("lowrank-attn-r4-2pct");
    let edit = Edit::LowRank {
        targets: ATTENTION.iter().map(|t| t.to_string()).collect(),
        rank: 4,
        fraction: 0.02,
    };
    let model = pot_formats::Model::open(&smol).unwrap();
    write_variant(&model, &variant, &edit, seed_of("lowrank-attn-r4-2pct")).unwrap();
    // The reference in the same encoding (F32), so the stored tensors differ only where edited.
    let reference = dir.path().join("f32");
    pot_formats::convert::convert(
        &model,
        &reference,
        pot_formats::convert::OutputDType::F32,
        |_, _| {},
    )
    .unwrap();
    drop(model);
    let (reference, variant) = (
        reference.display().to_string(),
        variant.display().to_string(),
    );
    let pair = [
        "--model1", &reference, "--model2", &variant, "--mode", "quick",
    ];
    let (code, r) = verify(dir.path(), &pair);
    assert_eq!(code, Some(1));
    assert_eq!(r["final_decision"], "DIFFERENT");
    assert!(r["enhanced_diff"]["n_effective"].as_u64().unwrap() <= 12);
    // 4 attention projections in each of 30 layers, named.
    let diff = &r["provenance"]["differing_tensors"];
    assert_eq!(
        (diff["count"].as_u64(), diff["total"].as_u64()),
        (Some(120), Some(272))
    );
    assert_eq!(diff["first"][0], "model.layers.0.self_attn.k_proj.weight");
    snapshot("smollm2_vs_low_rank_update", &r);

    // The same pair against a tolerance at its own mean score (0.0390 over these 48 challenges,
    // `pot calibrate -n 48 --run-id verify` with this key): the interval straddles γ until the
    // cap, UNDECIDED, and the report (and its page) shows why.
    let (code, r) = verify(dir.path(), &[&pair[..], &["--tolerance", "0.039"]].concat());
    assert_eq!(code, Some(3));
    assert_eq!(decision(&r), ("UNDECIDED", &Value::from(48)));
    let (lower, upper) = (
        r["enhanced_diff"]["ci_lower"].as_f64().unwrap(),
        r["enhanced_diff"]["ci_upper"].as_f64().unwrap(),
    );
    assert!(lower < 0.039 && 0.039 < upper, "[{lower}, {upper}]");
}

#[test]
fn golden_report_qwen_05b_against_15b_is_different() {
    let _one = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (code, r) = verify(
        dir.path(),
        &[
            "--model1",
            &path_of(QWEN_CODER_05B),
            "--model2",
            &path_of(QWEN_CODER_15B),
            "--mode",
            "quick",
        ],
    );
    assert_eq!(code, Some(1));
    assert_eq!(r["security"]["tokenizer"]["verdict"], "identical");
    assert_eq!(decision(&r), ("DIFFERENT", &Value::from(8)));
    snapshot("qwen_05b_vs_15b", &r);
}

#[test]
fn golden_report_different_tokenizers() {
    let _one = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (code, r) = verify(
        dir.path(),
        &[
            "--model1",
            &path_of(SMOLLM2_135M),
            "--model2",
            &path_of(QWEN_CODER_05B),
            "--mode",
            "quick",
        ],
    );
    assert_eq!(code, Some(1));
    assert_eq!(r["final_decision"], "DIFFERENT");
    assert!(r["reason"].as_str().unwrap().contains("tokenizers differ"));
    assert_eq!(r["trace"].as_array().unwrap().len(), 0);
    snapshot("smollm2_vs_qwen_tokenizers", &r);
}

/// Gemma 3 270M (gemma3 GGUF, SentencePiece vocabulary of 262,144): SAME against itself by the
/// sequential test too; DIFFERENT against SmolLM2 on the tokenizers, before any scoring.
#[test]
fn golden_report_gemma3_against_itself_and_smollm2() {
    let _one = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let gemma = path_of(GEMMA3_270M);
    let dir = tempfile::tempdir().unwrap();
    let (code, r) = verify(
        dir.path(),
        &["--model1", &gemma, "--model2", &gemma, "--mode", "quick"],
    );
    assert_eq!(code, Some(0));
    assert_eq!(r["final_decision"], "SAME");
    assert_eq!(r["enhanced_diff"]["decision"], "SAME");
    snapshot("gemma3_self_quick", &r);

    let dir = tempfile::tempdir().unwrap();
    let (code, r) = verify(
        dir.path(),
        &[
            "--model1",
            &gemma,
            "--model2",
            &path_of(SMOLLM2_135M),
            "--mode",
            "quick",
        ],
    );
    assert_eq!(code, Some(1));
    assert_eq!(r["final_decision"], "DIFFERENT");
    let reason = r["reason"].as_str().unwrap();
    assert!(reason.contains("tokenizers differ"), "{reason}");
    assert!(reason.contains("262144 tokens vs 49152 tokens"), "{reason}");
    assert_eq!(r["trace"].as_array().unwrap().len(), 0);
    snapshot("gemma3_vs_smollm2_tokenizers", &r);
}

/// A saved fingerprint: its own model is SAME, another model is DIFFERENT; the transcript root
/// checks out and catches a tampered score; another run id is refused with advice.
#[test]
fn golden_report_against_saved_fingerprints() {
    let _one = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let key = common::key_file(dir.path(), 0x5a);
    let fp: PathBuf = dir.path().join("smol.potfp");
    let fp_arg = fp.display().to_string();
    let smol = path_of(SMOLLM2_135M);
    let out = pot(&[
        "fingerprint",
        &smol,
        "--key-file",
        &key,
        "--mode",
        "quick",
        "-o",
        &fp_arg,
        "-q",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (code, r) = verify(
        dir.path(),
        &["--reference", &fp_arg, "--model2", &smol, "--mode", "quick"],
    );
    assert_eq!(code, Some(0));
    assert_eq!(decision(&r), ("SAME", &Value::from(8)));
    // A fingerprint header's Merkle root is reported, never taken as evidence of the weights.
    assert_eq!(r["provenance"]["identical_weights"], Value::Null);
    snapshot("smollm2_vs_own_fingerprint", &r);

    // The transcript root checks out, and tampering with one recorded score breaks it.
    let report = dir.path().join("report.json");
    let ok = pot(&["provenance", "verify", &report.display().to_string()]);
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
    let bad = pot(&["provenance", "verify", &t.display().to_string()]);
    assert_eq!(bad.status.code(), Some(1));

    let (code, r) = verify(
        dir.path(),
        &[
            "--reference",
            &fp_arg,
            "--model2",
            &path_of(QWEN_CODER_05B),
            "--mode",
            "quick",
        ],
    );
    assert_eq!(code, Some(1));
    assert_eq!(r["final_decision"], "DIFFERENT");
    snapshot("qwen_05b_vs_smollm2_fingerprint", &r);

    // The same fingerprint under another run id is refused with advice, not misused.
    let out = pot(&[
        "verify",
        "--reference",
        &fp_arg,
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
    // Bad input (exit 4), not a runtime failure.
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--run-id"));

    // Under another key the fingerprint is refused, naming both key ids.
    let other_key = dir.path().join("other.hex");
    std::fs::write(&other_key, "17".repeat(32)).unwrap();
    let out = pot(&[
        "verify",
        "--reference",
        &fp_arg,
        "--model2",
        &smol,
        "--key-file",
        &other_key.display().to_string(),
        "--mode",
        "quick",
        "-q",
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("made under key id"));

    // One log-prob changed and the old unkeyed SHA-256 trailer recomputed: refused.
    let bytes = std::fs::read(&fp).unwrap();
    let mut forged = bytes[..bytes.len() - 32].to_vec();
    let at = forged.len() - 4;
    forged[at..].copy_from_slice(&(-0.25f32).to_le_bytes());
    let digest = <sha2::Sha256 as sha2::Digest>::digest(&forged);
    forged.extend_from_slice(&digest);
    let forged_path = dir.path().join("forged.potfp");
    std::fs::write(&forged_path, forged).unwrap();
    let out = pot(&[
        "verify",
        "--reference",
        &forged_path.display().to_string(),
        "--model2",
        &smol,
        "--key-file",
        &key,
        "--mode",
        "quick",
        "-q",
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("edited after it was signed"));
}
