//! `pot plan`: its figures are the governor's plan that `pot verify` uses, on the same workload.

mod common;

use common::pot;
use pot_challenge_kdf::{ChallengeSpec, MasterKey, generate};
use pot_formats::fixtures::{QWEN_CODER_15B, SMOLLM2_135M, model_path};
use pot_memory_governor::estimates;
use serde_json::Value;

fn plan_json(args: &[&str]) -> (Option<i32>, Value) {
    let out = pot(&[&["plan", "--json"], args].concat());
    let text = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "pot plan printed no JSON ({e}): {text}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), json)
}

fn total(plan: &Value, strategy: &str) -> u64 {
    plan["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["strategy"] == strategy)
        .unwrap_or_else(|| panic!("no {strategy} row in {plan:#}"))["estimate"]["total_bytes"]
        .as_u64()
        .unwrap()
}

fn gb(bytes: u64) -> String {
    format!("{:.2} GB", bytes as f64 / 1e9)
}

/// The figures `pot plan` prints for a model are the ones a `pot verify` of it is planned
/// with: to the byte in the report of a run that fits, and in the refusal of one that does not.
#[test]
fn plan_figures_are_the_ones_verify_plans_with() {
    let dir = tempfile::tempdir().unwrap();
    let key = common::key_file(dir.path(), 0x3c);
    let smol = model_path(SMOLLM2_135M).display().to_string();
    let (code, plan) = plan_json(&[&smol, "--key-file", &key, "--mode", "quick"]);
    assert_eq!(code, Some(0), "{plan:#}");
    assert_eq!(plan["verify"]["strategy"], "resident");
    let report_path = dir.path().join("r.json");
    let out = pot(&[
        "verify",
        "--model1",
        &smol,
        "--model2",
        &smol,
        "--key-file",
        &key,
        "--mode",
        "quick",
        "-q",
        "-o",
        &report_path.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let planned = &report["memory"]["plan"]["model1"];
    assert_eq!(planned["strategy"]["kind"], "resident");
    assert_eq!(
        planned["estimate"]["total_bytes"].as_u64(),
        Some(total(&plan, "resident"))
    );
    assert_eq!(planned["estimate"], plan["strategies"][0]["estimate"]);
    assert_eq!(
        planned["budget_bytes"].as_u64().is_some(),
        plan["budget_bytes"].as_u64().is_some()
    );

    // Qwen 1.5B under 3 GB: refused resident, streamed with --enable-offload; verify's refusal
    // names the same two figures.
    let qwen = model_path(QWEN_CODER_15B).display().to_string();
    let base = [
        &qwen[..],
        "--key-file",
        &key,
        "--mode",
        "quick",
        "--max-memory",
        "3",
    ];
    let (code, plan) = plan_json(&base);
    assert_eq!(code, Some(5), "{plan:#}");
    assert!(
        plan["verify"]["refused"]
            .as_str()
            .unwrap()
            .contains("--enable-offload")
    );
    let (resident, streamed) = (total(&plan, "resident"), total(&plan, "streamed"));
    assert!(resident > 6_000_000_000 && streamed < 3_000_000_000);
    let out = pot(&[
        "verify",
        "--model1",
        &qwen,
        "--model2",
        &qwen,
        "--key-file",
        &key,
        "--mode",
        "quick",
        "--max-memory",
        "3",
    ]);
    assert_eq!(out.status.code(), Some(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("resident (f32) needs {}", gb(resident)))
            && err.contains(&format!("streamed layer by layer needs {}", gb(streamed))),
        "verify: {err}\nplan: resident {resident}, streamed {streamed}"
    );
    let (code, plan) = plan_json(&[&base[..], &["--enable-offload"]].concat());
    assert_eq!(code, Some(0));
    assert_eq!(plan["verify"]["strategy"], "streamed");
    assert_eq!(
        plan["verify"]["execution_against_a_copy"],
        pot_memory_governor::Execution::Interleaved.describe()
    );
}

/// A shape by hand: Llama-2-70B's published parameter count, and the figures of the governor's
/// own estimates for that config on the workload of this key's challenges.
#[test]
fn a_70b_shape_is_planned_without_any_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = common::key_file(dir.path(), 0x3c);
    let (code, plan) = plan_json(&[
        "--shape",
        "70b",
        "--key-file",
        &key,
        "--mode",
        "audit",
        "--max-memory",
        "4",
        "--enable-offload",
    ]);
    // 4 GB is not enough even streamed (one 70B block is 0.86 B parameters, 3.4 GB in f32).
    assert_eq!(code, Some(5), "{plan:#}");
    assert!(
        plan["verify"]["refused"]
            .as_str()
            .unwrap()
            .contains("raise --max-memory")
    );
    let params = plan["parameters"].as_u64().unwrap();
    assert!(
        (68_900_000_000..69_100_000_000).contains(&params),
        "{params}"
    );

    // The same estimates, computed here through the library verify uses.
    let config: pot_formats::ModelConfig =
        serde_json::from_value(plan["config"].clone()).expect("the plan carries its config");
    let description = pot_formats::ModelDescription::from_config("70b".into(), &config, "F16", 2.0);
    assert_eq!(description.parameter_count, params);
    let key = MasterKey::from_bytes([0x3c; 32]);
    let count = plan["challenges"].as_u64().unwrap();
    let challenges = generate(&key, &ChallengeSpec::new("verify", count));
    let work = pot_orchestrator::workload_without_tokenizer(&challenges, 4);
    assert_eq!(serde_json::to_value(work).unwrap(), plan["workload"]);
    for (strategy, estimate) in estimates(&description, &work) {
        let name = strategy.name();
        assert_eq!(total(&plan, name), estimate.total_bytes, "{name}");
    }
    // With 16 GB it streams.
    let (code, plan) = plan_json(&["--shape", "70b", "--max-memory", "16", "--enable-offload"]);
    assert_eq!(code, Some(0), "{plan:#}");
    assert_eq!(plan["verify"]["strategy"], "streamed");
}
