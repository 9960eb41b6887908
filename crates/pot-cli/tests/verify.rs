//! `pot verify` end to end on the real fixture models.

mod common;

use common::{pot, pot_env};

use pot_formats::fixtures::{QWEN_CODER_05B, SMOLLM2_135M, model_path};
use pot_orchestrator::schema::validate_report;

fn report(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
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

/// A backend left out of this build is refused as usage (exit 2) before any model is opened,
/// with the build command that adds it; no report is written.
#[test]
fn a_backend_not_compiled_in_is_a_usage_error() {
    if pot_scoring::Backend::Wgpu.device().is_ok() {
        return; // this build has wgpu: nothing to refuse
    }
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let smol = model_path(SMOLLM2_135M).display().to_string();
    let out = pot(&[
        "verify",
        "--model1",
        &smol,
        "--model2",
        &smol,
        "--backend",
        "wgpu",
        "-q",
        "-o",
        &json.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cargo build -p pot-cli --features pot-scoring/wgpu"),
        "{stderr}"
    );
    assert!(!json.exists());
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

/// A model that does not fit is refused before loading, with the numbers and the flag to use.
#[test]
fn a_model_over_budget_is_refused_before_loading() {
    let smol = model_path(SMOLLM2_135M).display().to_string();
    let base = ["verify", "--model1", &smol, "--model2", &smol, "-q"];
    let key = [("POT_KEY", "ab".repeat(32))];
    let key: Vec<(&str, &str)> = key.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let pot = |args: &[&str]| pot_env(args, &key);
    let out = pot(&[&base[..], &["--max-memory", "0.9"]].concat());
    assert_eq!(out.status.code(), Some(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not fit") && err.contains("add --enable-offload"),
        "{err}"
    );
    // Below one layer plus activations even streaming cannot help: raise the budget.
    let out = pot(&[&base[..], &["--max-memory", "0.3", "--enable-offload"]].concat());
    assert_eq!(out.status.code(), Some(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("raise --max-memory"), "{err}");
}

/// Two models that must stream run interleaved (each batch through model 1, then model 2):
/// SAME after the early stop, within the budget, and model 1 computed only the batches the test
/// used, not the whole query cap.
#[test]
fn two_streamed_models_run_interleaved_within_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let smol = model_path(SMOLLM2_135M).display().to_string();
    let out = pot(&[
        "verify",
        "--model1",
        &smol,
        "--model2",
        &smol,
        "--mode",
        "quick",
        "--max-memory",
        "1.0",
        "--enable-offload",
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
    assert_eq!(validate_report(&r), Vec::<String>::new());
    let plan = &r["memory"]["plan"];
    assert_eq!(
        plan["execution"],
        pot_memory_governor::Execution::Interleaved.describe()
    );
    assert_eq!(plan["model1"]["strategy"]["kind"], "streamed");
    assert_eq!(plan["model2"]["strategy"]["kind"], "streamed");
    let peak = r["memory"]["peak_rss_bytes"].as_u64().unwrap();
    let budget = plan["model2"]["budget_bytes"].as_u64().unwrap();
    assert!(peak <= budget, "peak {peak} over the budget {budget}");
    assert_eq!(r["enhanced_diff"]["n_effective"], 8);
    // No fingerprint of the whole cap: model 1 was never released early, and no timing of it.
    assert!(r["timings_s"].get("fingerprint_model1_s").is_none());
    let events: Vec<&str> = r["memory"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(!events.contains(&"model 1 released"), "{events:?}");
}

/// A budget crossed at run time (forced below the RSS of a loaded model) stops the work
/// cleanly: exit 5, a complete report with success false and advice, no stray files.
#[test]
fn a_budget_crossed_mid_run_aborts_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let smol = model_path(SMOLLM2_135M).display().to_string();
    let out = pot_env(
        &[
            "verify",
            "--model1",
            &smol,
            "--model2",
            &smol,
            "--mode",
            "quick",
            "-q",
            "-o",
            &json.display().to_string(),
        ],
        &[(pot_orchestrator::MONITOR_BUDGET_ENV, "150000000")],
    );
    assert_eq!(out.status.code(), Some(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("memory limit exceeded") && err.contains("--enable-8bit"),
        "{err}"
    );
    let r = report(&json);
    assert_eq!(validate_report(&r), Vec::<String>::new());
    assert_eq!(r["success"], false);
    assert_eq!(r["final_decision"], "UNDECIDED");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .starts_with("memory limit exceeded")
    );
    assert!(r["advice"].as_str().unwrap().contains("--enable-offload"));
    assert!(
        r["memory"]["abort"]
            .as_str()
            .unwrap()
            .contains("over the budget")
    );
    // The report and the fresh key saved beside it (no --key-file), nothing half-written.
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["report.json", "report.json.key"]);
}

/// `pot monitor` refuses to guard a process that is not pot, and at the kill threshold stops
/// only the pot process it guards, which writes its own report on SIGTERM.
#[test]
fn monitor_guards_only_pot_processes() {
    let dir = tempfile::tempdir().unwrap();
    let me = std::process::id().to_string();
    let out = pot(&["monitor", "--pid", &me, "--duration", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a pot process"));

    // The guarded process: a pot monitor that only watches, killed via the second one.
    let guarded_report = dir.path().join("guarded.json");
    let mut guarded = std::process::Command::new(env!("CARGO_BIN_EXE_pot"))
        .args([
            "monitor",
            "--interval",
            "0.05",
            "--duration",
            "60",
            "--report",
        ])
        .arg(&guarded_report)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let guard_report = dir.path().join("guard.json");
    let pid = guarded.id().to_string();
    // Kill threshold 0.1 %: always reached, so the guard acts at once.
    let out = pot(&[
        "monitor",
        "--pid",
        &pid,
        "--warning",
        "0.1",
        "--critical",
        "0.1",
        "--kill",
        "0.1",
        "--interval",
        "0.05",
        "--report",
        &guard_report.display().to_string(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = guarded.wait().unwrap();
    assert!(
        status.success(),
        "the guarded monitor exits cleanly on SIGTERM"
    );
    let guard = report(&guard_report);
    assert!(guard["end"].as_str().unwrap().contains("kill threshold"));
    assert!(
        guard["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["level"] == "kill")
    );
    let guarded = report(&guarded_report);
    assert!(guarded["end"].as_str().unwrap().contains("signal received"));
}

/// The same weights saved by current transformers (5.x config layout, `rope_parameters`) and
/// with a 4.x-style config: SAME against the GGUF, with equal canonical Merkle roots and equal
/// architecture hashes (fixtures/variants/resave.py).
#[test]
fn a_transformers_saved_copy_is_the_same_model() {
    let Some(python) = common::python_with("torch, transformers") else {
        println!(
            "skipped: no Python with torch and transformers (pip install -r fixtures/variants/requirements.txt into ~/.cache/pot/pyenv)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let smol = model_path(SMOLLM2_135M).display().to_string();
    let f32_dir = dir.path().join("f32");
    let out = pot(&["convert", &smol, "--out", &f32_dir.display().to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/variants/resave.py");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg(&f32_dir)
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inspect = |m: &str| -> serde_json::Value {
        let out = pot(&["inspect", m, "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let canonical = |m: &str| {
        let out = pot(&["merkle", "root", "--canonical", m]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let gguf_arch = inspect(&smol)["config_hashes"]["architecture_sha256"].clone();
    let gguf_root = canonical(&smol);
    for layout in ["resaved-5x", "resaved-4x"] {
        let copy = dir.path().join(layout).display().to_string();
        let config = std::fs::read_to_string(dir.path().join(layout).join("config.json")).unwrap();
        assert_eq!(
            config.contains("rope_parameters"),
            layout == "resaved-5x",
            "{config}"
        );
        let info = inspect(&copy);
        assert_eq!(info["config"]["rope_theta"], 100000.0, "{layout}");
        assert_eq!(
            info["config_hashes"]["architecture_sha256"], gguf_arch,
            "{layout}"
        );
        assert_eq!(canonical(&copy), gguf_root, "{layout}");
        let json = dir.path().join(format!("{layout}.json"));
        let out = pot(&[
            "verify",
            "--model1",
            &smol,
            "--model2",
            &copy,
            "--mode",
            "quick",
            "-q",
            "-o",
            &json.display().to_string(),
        ]);
        let r = report(&json);
        assert_eq!(out.status.code(), Some(0), "{layout}: {}", r["reason"]);
        assert_eq!(r["final_decision"], "SAME");
        assert_eq!(r["security"]["config_hash"]["match"], true, "{layout}");
    }
}

/// A report that cannot be written does not hide the verdict: it is printed, and the exit code
/// is 6 (runtime), not 2 (usage).
#[test]
fn an_unwritable_report_still_prints_the_verdict() {
    let smol = model_path(SMOLLM2_135M).display().to_string();
    let key = "ab".repeat(32);
    let out = pot_env(
        &[
            "verify",
            "--model1",
            &smol,
            "--model2",
            &smol,
            "--mode",
            "quick",
            "-q",
            "-o",
            "/nonexistent/dir/r.json",
        ],
        &[("POT_KEY", &key)],
    );
    assert_eq!(out.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("SAME"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/dir"));
}

/// `--progress json`: every stderr line is one JSON event; the queries carry the running
/// interval, which closes in on the mean, and the process's RSS.
#[test]
fn progress_as_json_lines() {
    let smol = model_path(SMOLLM2_135M).display().to_string();
    let key = "ab".repeat(32);
    let out = pot_env(
        &[
            "verify",
            "--model1",
            &smol,
            "--model2",
            &smol,
            "--mode",
            "quick",
            "--progress",
            "json",
        ],
        &[("POT_KEY", &key)],
    );
    assert_eq!(out.status.code(), Some(0));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(events.iter().any(|e| e["event"] == "stage"));
    let queries: Vec<&serde_json::Value> =
        events.iter().filter(|e| e["event"] == "query").collect();
    assert!(queries.len() >= 6, "{events:?}");
    let (first, last) = (queries[0], queries[queries.len() - 1]);
    assert_eq!(first["query"], 1);
    let width = |e: &serde_json::Value| e["upper"].as_f64().unwrap() - e["lower"].as_f64().unwrap();
    assert!(width(last) < width(first));
    assert!(last["rss_bytes"].as_u64().unwrap() > 1 << 20);
}

/// The README's commit -> verify -> check-commitment workflow, end to end: the commitment
/// published before the run is the one the report carries, and the revealed key reproduces it.
#[test]
fn commit_then_verify_then_check_the_commitment() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.hex");
    let key_arg = key.display().to_string();
    assert!(pot(&["keygen", "--out", &key_arg]).status.success());
    let commit = pot(&[
        "challenges",
        "commit",
        "--key-file",
        &key_arg,
        "--run-id",
        "audit-2026",
        "--mode",
        "quick",
    ]);
    assert!(commit.status.success());
    let published = String::from_utf8_lossy(&commit.stdout).trim().to_string();
    let smol = model_path(SMOLLM2_135M).display().to_string();
    let json = dir.path().join("r.json");
    let out = pot(&[
        "verify",
        "--model1",
        &smol,
        "--model2",
        &smol,
        "--key-file",
        &key_arg,
        "--run-id",
        "audit-2026",
        "--mode",
        "quick",
        "-q",
        "-o",
        &json.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        report(&json)["challenges"]["commitment"],
        published.as_str()
    );
    let check = |commitment: &str| {
        pot(&[
            "challenges",
            "check-commitment",
            "--key-file",
            &key_arg,
            "--commitment",
            commitment,
            "--report",
            &json.display().to_string(),
        ])
    };
    let ok = check(&published);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let wrong = check(&"0".repeat(64));
    assert_eq!(wrong.status.code(), Some(1));
    // verify's defaults are commit's defaults (run id `verify`, mode audit).
    let default_commit = pot(&["challenges", "commit", "--key-file", &key_arg]);
    let dry = pot(&["challenges", "--key-file", &key_arg, "--json"]);
    let dry: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(dry["commitment"]["spec"]["run_id"], "verify");
    assert_eq!(dry["commitment"]["spec"]["count"], 96);
    assert_eq!(
        String::from_utf8_lossy(&default_commit.stdout).trim(),
        dry["commitment"]["digest"].as_str().unwrap()
    );
}

/// Without a key and without a report to save a fresh one beside, verify refuses (a run nobody
/// can replay); with a report, the fresh key is saved beside it, mode 0600.
#[test]
fn a_run_without_a_key_is_replayable_or_refused() {
    let smol = model_path(SMOLLM2_135M).display().to_string();
    let out = pot(&["verify", "--model1", &smol, "--model2", &smol, "-q"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no master key"));
}

/// A Hugging Face cache as huggingface_hub lays it out, holding SmolLM2 (the fixture exported
/// to safetensors) as `HuggingFaceTB/SmolLM2-135M` at `commit`, with `refs/main` pointing there.
fn hub_cache(root: &std::path::Path, commit: &str) -> std::path::PathBuf {
    use sha2::Digest;
    let export = root.join("export");
    let model = pot_formats::Model::open(model_path(SMOLLM2_135M)).unwrap();
    pot_formats::convert::convert(
        &model,
        &export,
        pot_formats::convert::OutputDType::F16,
        |_, _| {},
    )
    .unwrap();
    let cache = root.join("hf-home/hub");
    let repo = cache.join("models--HuggingFaceTB--SmolLM2-135M");
    let snapshot = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    for entry in std::fs::read_dir(&export).unwrap() {
        let path = entry.unwrap().path();
        let blob = format!("{:x}", sha2::Sha256::digest(std::fs::read(&path).unwrap()));
        std::fs::rename(&path, repo.join("blobs").join(&blob)).unwrap();
        std::os::unix::fs::symlink(
            format!("../../blobs/{blob}"),
            snapshot.join(path.file_name().unwrap()),
        )
        .unwrap();
    }
    cache
}

/// `--model1 ORG/NAME` and `--model2 ORG/NAME@COMMIT` are found in the cache ($HF_HOME/hub)
/// and the report records what they resolved to; a repository not in the cache is bad input
/// (exit 4) naming the directory searched and the download command.
#[test]
fn models_named_by_repository_are_found_in_the_hugging_face_cache() {
    const COMMIT: &str = "93efa2f097d58c2a74874c7e644dbc9b0cee75a2";
    let dir = tempfile::tempdir().unwrap();
    let cache = hub_cache(dir.path(), COMMIT);
    let hf_home = cache.parent().unwrap().display().to_string();
    let env = [("HF_HUB_CACHE", ""), ("HF_HOME", hf_home.as_str())];
    let json = dir.path().join("report.json");
    let key = common::key_file(dir.path(), 7);
    let out = pot_env(
        &[
            "verify",
            "--model1",
            "HuggingFaceTB/SmolLM2-135M",
            "--model2",
            &format!("HuggingFaceTB/SmolLM2-135M@{COMMIT}"),
            "--mode",
            "quick",
            "--key-file",
            &key,
            "-q",
            "-o",
            &json.display().to_string(),
        ],
        &env,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report(&json);
    assert_eq!(validate_report(&r), Vec::<String>::new());
    assert_eq!(r["final_decision"], "SAME");
    let snapshot = cache
        .join("models--HuggingFaceTB--SmolLM2-135M/snapshots")
        .join(COMMIT);
    assert_eq!(r["model1"], snapshot.display().to_string());
    for (model, revision) in [("model1", "main"), ("model2", COMMIT)] {
        let source = &r["sources"][model];
        assert_eq!(source["repo"], "HuggingFaceTB/SmolLM2-135M");
        assert_eq!(source["revision"], revision);
        assert_eq!(source["commit"], COMMIT);
    }

    let out = pot_env(&["inspect", "HuggingFaceTB/SmolLM2-360M"], &env);
    assert_eq!(out.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            &cache
                .join("models--HuggingFaceTB--SmolLM2-360M")
                .display()
                .to_string()
        ) && stderr.contains("hf download HuggingFaceTB/SmolLM2-360M"),
        "{stderr}"
    );
}
