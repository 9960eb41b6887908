//! `pot verify` against a real serving engine: llama.cpp's OpenAI-compatible server as shipped by
//! `llama-cpp-python[server]`, serving the SmolLM2 fixture, started here on a free port and
//! stopped after. Skipped with a message where no Python imports `llama_cpp` (install:
//! `pip install -r fixtures/served/requirements.txt` into ~/.cache/pot/pyenv). vLLM and SGLang need a
//! GPU: their response shapes are tested in crates/pot-served/tests/shapes.rs.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::pot_env;
use pot_formats::fixtures::{QWEN_CODER_05B, SMOLLM2_135M, model_path};
use pot_formats::variants::{ATTENTION, Edit, write_variant};
use serde_json::Value;

/// A llama-cpp-python server, killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn start_server(python: &Path, model: &Path, log: &Path) -> Server {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(python)
        .args(["-m", "llama_cpp.server", "--model"])
        .arg(model)
        .args([
            "--logits_all",
            "true",
            "--n_ctx",
            "2048",
            "--n_threads",
            "2",
        ])
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}/v1"),
    };
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the llama-cpp-python server did not start; its log: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    server
}

/// `pot verify` in QUICK mode against `server` through `api`, with the run's key; `args` name
/// the reference and any other flags.
fn verify_served(
    server: &Server,
    key: &str,
    api: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let mut all = vec![
        "verify",
        "--model2",
        &server.url,
        "--served-api",
        api,
        "--mode",
        "quick",
        "--key-file",
        key,
    ];
    all.extend_from_slice(args);
    pot_env(&all, env)
}

#[test]
fn a_served_model_is_verified_through_its_server() {
    let Some(python) = common::python_with("llama_cpp.server") else {
        println!(
            "skipped: no Python with llama-cpp-python[server] (~/.cache/pot/pyenv/bin/pip install -r fixtures/served/requirements.txt)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let smol: PathBuf = model_path(SMOLLM2_135M);
    let server = start_server(&python, &smol, &dir.path().join("server.log"));
    let key = common::key_file(dir.path(), 0x5e);
    let secret = "pot-test-secret-api-key-7d1e";
    let out_path = dir.path().join("r.json");
    let out = verify_served(
        &server,
        &key,
        "llama-cpp-python",
        &[
            "--model1",
            &smol.display().to_string(),
            "-o",
            &out_path.display().to_string(),
        ],
        &[("POT_API_KEY", secret)],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report_text = std::fs::read_to_string(&out_path).unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{stderr}\n{report_text}"
    );
    let report: Value = serde_json::from_str(&report_text).unwrap();
    assert_eq!(report["final_decision"], "SAME");
    let served = &report["served"];
    assert_eq!(served["api"], "llama-cpp-python");
    assert!(served["model"].as_str().unwrap().ends_with(SMOLLM2_135M));
    // The default against a llama.cpp server: model 1's deployments, each computed as
    // llama.cpp computes it; the file served is model 1 as stored, and SAME names it.
    assert!(
        served["tolerance_reason"]
            .as_str()
            .unwrap()
            .contains("deployments"),
        "{}",
        served["tolerance_reason"]
    );
    assert_eq!(report["mode"]["tolerance"], "path");
    assert_eq!(
        report["deployments"]["named"], "stored",
        "{}",
        report["deployments"]
    );
    assert_eq!(report["enhanced_diff"]["deployment"]["name"], "stored");
    let tested = report["deployments"]["tested"].as_array().unwrap();
    assert_eq!(
        tested.len(),
        7,
        "stored plus six other file types: {tested:?}"
    );
    assert!(
        tested
            .iter()
            .all(|d| d["arithmetic"] == "llama.cpp (kv f16)")
    );
    assert!(served["requests"].as_u64().unwrap() >= 8);
    assert_eq!(report["security"]["tokenizer"]["verdict"], "identical");
    // The API key never reaches the output or the report.
    for text in [&*stdout, &*stderr, &report_text] {
        assert!(!text.contains(secret));
    }
    println!(
        "served SmolLM2 (llama.cpp, Q4_1) vs its deployments: {} ({}) after {} queries, mean {:.5}",
        report["final_decision"],
        report["deployments"]["named"],
        report["enhanced_diff"]["n_effective"],
        report["enhanced_diff"]["effect_size"]
    );

    // A preset given: model 1 as stored under it, computed by pot in f32 (the engine's own
    // arithmetic then scores ~0.026, inside `quantized`).
    let out = verify_served(
        &server,
        &key,
        "llama-cpp-python",
        &[
            "--model1",
            &smol.display().to_string(),
            "--tolerance",
            "quantized",
            "-o",
            &out_path.display().to_string(),
        ],
        &[],
    );
    let report_text = std::fs::read_to_string(&out_path).unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{report_text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&report_text).unwrap();
    assert_eq!(report["final_decision"], "SAME");
    assert_eq!(report["mode"]["tolerance"], "quantized");
    assert!(report["deployments"].is_null());
    assert_eq!(
        report["served"]["tolerance_reason"],
        "given with --tolerance"
    );

    // Model 1 as stored, computed as llama.cpp computes it: the same file scores exactly 0 (the
    // server runs on this machine's CPU), under the tolerance of that path.
    let out = verify_served(
        &server,
        &key,
        "llama-cpp-python",
        &[
            "--model1",
            &smol.display().to_string(),
            "--emulate",
            "llama.cpp",
            "--deployment",
            "exact",
            "-o",
            &out_path.display().to_string(),
        ],
        &[],
    );
    let report_text = std::fs::read_to_string(&out_path).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report_text}");
    let report: Value = serde_json::from_str(&report_text).unwrap();
    assert_eq!(report["final_decision"], "SAME");
    assert_eq!(report["mode"]["tolerance"], "path", "{}", report["mode"]);
    assert_eq!(report["arithmetic"]["model1"], "llama.cpp (kv f16)");
    assert_eq!(report["deployments"]["tested"].as_array().unwrap().len(), 1);
    // Most challenges score 0 up to the two sides' f32 log-softmax (~4e-7; pot's f32 pass
    // scores ~0.026 each); a few carry the served scorer's own residual (docs/SERVED.md), inside
    // the accept region.
    let scores: Vec<f64> = report["trace"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["score"].as_f64().unwrap())
        .collect();
    let exact = scores.iter().filter(|&&s| s < 1e-5).count();
    assert!(2 * exact >= scores.len(), "scores {scores:?}");
    let mean = report["enhanced_diff"]["effect_size"].as_f64().unwrap();
    assert!(mean < 0.4 * 0.016, "emulated vs served mean score {mean}");
    println!(
        "served SmolLM2 vs local computed as llama.cpp: {} after {} queries, mean {mean:.5}",
        report["final_decision"], report["enhanced_diff"]["n_effective"]
    );

    // A modified SmolLM2 (rank-4 update of every attention projection, 10 % of each weight's
    // norm; scores ~0.2 locally) as the reference: DIFFERENT through the server too.
    let smol_s = smol.display().to_string();
    let variant = dir.path().join("lowrank");
    let model = pot_formats::Model::open(&smol).unwrap();
    let edit = Edit::LowRank {
        targets: ATTENTION.iter().map(|s| s.to_string()).collect(),
        rank: 4,
        fraction: 0.10,
    };
    write_variant(&model, &variant, &edit, 7).unwrap();
    let variant_s = variant.display().to_string();
    let out = verify_served(
        &server,
        &key,
        "llama-cpp-python",
        &["--model1", &variant_s],
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("DIFFERENT"), "{stdout}");
    // Its tokenizer.json serves the fingerprint run below.
    let tokenizer_json = dir.path().join("tokenizer.json");
    std::fs::copy(variant.join("tokenizer.json"), &tokenizer_json).unwrap();
    std::fs::remove_dir_all(&variant).unwrap();
    let tokenizer_s = tokenizer_json.display().to_string();

    // The same weights through a saved fingerprint: no model file is named or loaded; a
    // tokenizer.json checks the server's tokens.
    let fp = dir.path().join("smol.potfp").display().to_string();
    let out = pot_env(
        &[
            "fingerprint",
            &smol_s,
            "--key-file",
            &key,
            "--run-id",
            "served",
            "--mode",
            "quick",
            "-o",
            &fp,
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = verify_served(
        &server,
        &key,
        "llama-cpp-python",
        &[
            "--reference",
            &fp,
            "--tokenizer",
            &tokenizer_s,
            "--run-id",
            "served",
        ],
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("SAME"), "{stdout}");
    // Without a tokenizer a fingerprint cannot check the server's tokens: refused up front.
    let out = pot_env(
        &[
            "verify",
            "--reference",
            &fp,
            "--model2",
            &server.url,
            "--key-file",
            &key,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tokenizer"));

    // Another model as the reference: the server's tokens are not its tokens, so the models
    // cannot be the same, and nothing is scored.
    let qwen = model_path(QWEN_CODER_05B).display().to_string();
    let out = verify_served(&server, &key, "llama-cpp-python", &["--model1", &qwen], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("DIFFERENT"), "{stdout}");

    // A model name the server does not serve: a usage error listing what it serves.
    let out = pot_env(
        &[
            "verify",
            "--model1",
            &smol_s,
            "--model2",
            &server.url,
            "--served-model",
            "nope",
            "--key-file",
            &key,
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("does not serve `nope`") && stderr.contains(SMOLLM2_135M),
        "{stderr}"
    );
    // The wrong --served-api: llama-cpp-python's rows read with OpenAI's layout are one
    // position late; caught on the first challenge, nothing scored.
    let out = verify_served(&server, &key, "openai", &["--model1", &smol_s], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("one position off") && stderr.contains("--served-api"),
        "{stderr}"
    );
    drop(server);

    // A server that is not there: a clear error and a report saying so, not a hang or a panic.
    let failed = dir.path().join("down.json");
    let out = pot_env(
        &[
            "verify",
            "--model1",
            &smol.display().to_string(),
            "--model2",
            "http://127.0.0.1:9/v1",
            "--request-timeout",
            "2",
            "--key-file",
            &key,
            "-o",
            &failed.display().to_string(),
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("cannot reach the server"), "{stderr}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&failed).unwrap()).unwrap();
    assert_eq!(report["success"], false);
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("cannot reach the server")
    );
}
