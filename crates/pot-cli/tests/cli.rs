//! The `pot` binary as a user runs it.

mod common;

use std::path::Path;
use std::process::Output;

use common::pot;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write_key(dir: &Path) -> String {
    let key = dir.join("k.hex");
    std::fs::write(&key, "0123456789abcdef".repeat(4)).unwrap();
    key.display().to_string()
}

#[test]
fn golden_challenges_cli_output() {
    let dir = tempfile::tempdir().unwrap();
    let key = write_key(dir.path());
    let out = pot(&[
        "challenges",
        "--key-file",
        &key,
        "--run-id",
        "golden-run",
        "-n",
        "5",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    insta::assert_snapshot!(stdout(&out));
    // The key itself never appears in any output.
    assert!(!stdout(&out).contains("0123456789abcdef"));
}

#[test]
fn commitment_round_trip_and_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let key = write_key(dir.path());
    let out = pot(&[
        "challenges",
        "commit",
        "--key-file",
        &key,
        "--run-id",
        "r1",
        "-n",
        "16",
    ]);
    assert!(out.status.success());
    let digest = stdout(&out).trim().to_string();
    assert_eq!(digest.len(), 64);
    let ok = pot(&[
        "challenges",
        "check-commitment",
        "--key-file",
        &key,
        "--run-id",
        "r1",
        "-n",
        "16",
        "--commitment",
        &digest,
    ]);
    assert_eq!(ok.status.code(), Some(0), "{}", stdout(&ok));
    let bad = pot(&[
        "challenges",
        "check-commitment",
        "--key-file",
        &key,
        "--run-id",
        "r1",
        "-n",
        "17",
        "--commitment",
        &digest,
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stdout(&bad).contains("MISMATCH"));
}

#[test]
fn keys_are_created_private_and_bad_keys_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("new.key").display().to_string();
    let out = pot(&["keygen", "--out", &key]);
    assert!(out.status.success(), "{}", stderr(&out));
    let again = pot(&["keygen", "--out", &key]);
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("refusing to overwrite"));

    let bad = dir.path().join("bad.key");
    std::fs::write(&bad, "not-a-key").unwrap();
    let out = pot(&[
        "challenges",
        "--key-file",
        &bad.display().to_string(),
        "-n",
        "1",
    ]);
    // A key file that is not a key is bad input (4); a missing key is a usage error (2).
    assert_eq!(out.status.code(), Some(4));
    assert!(stderr(&out).contains("64 hex digits"), "{}", stderr(&out));
    let out = pot(&["challenges", "-n", "1"]);
    assert!(stderr(&out).contains("no master key"), "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(2));

    let created = dir.path().join("created.key").display().to_string();
    let out = pot(&[
        "challenges",
        "--key-file",
        &created,
        "--create-key",
        "-n",
        "1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("created a new master key"));
}

#[test]
fn decide_reports_the_stopping_query_and_names_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let scores = dir.path().join("scores.txt");
    std::fs::write(
        &scores,
        "# same model\n".to_string() + &"0.0001\n".repeat(30),
    )
    .unwrap();
    let s = scores.display().to_string();
    let out = pot(&["decide", "--scores", &s, "--mode", "quick"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("SAME at query 8 of 30"),
        "{}",
        stdout(&out)
    );

    std::fs::write(&scores, "0.5\n".repeat(40)).unwrap();
    let out = pot(&["decide", "--scores", &s, "--mode", "audit", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["verdict"], "DIFFERENT");

    std::fs::write(&scores, "0.1\n0.2\nabc\n").unwrap();
    let out = pot(&["decide", "--scores", &s]);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        stderr(&out).contains(":3: `abc` is not a number"),
        "{}",
        stderr(&out)
    );

    std::fs::write(&scores, "0.1\n1.7\n").unwrap();
    let out = pot(&["decide", "--scores", &s]);
    assert!(
        stderr(&out).contains(":2: score 1.7 lies outside"),
        "{}",
        stderr(&out)
    );

    std::fs::write(&scores, "\n# nothing\n").unwrap();
    let out = pot(&["decide", "--scores", &s]);
    assert!(stderr(&out).contains("holds no scores"), "{}", stderr(&out));
}

#[test]
fn inspect_a_missing_model_says_what_to_do() {
    let out = pot(&["inspect", "/nonexistent/model.gguf"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
}

/// The architectures pot runs are listed where users look (`pot inspect --help`), and a model
/// of another is refused before loading with the same list.
#[test]
fn supported_architectures_are_listed_and_others_refused_with_the_list() {
    let help = stdout(&pot(&["inspect", "--help"]));
    let supported = pot_formats::Architecture::SUPPORTED;
    assert!(help.contains(supported), "{help}");
    let dir = tempfile::tempdir().unwrap();
    let neox = tiny_model_with(
        &dir.path().join("gpt_neox"),
        |c| c["model_type"] = "gpt_neox".into(),
        false,
    );
    let out = pot(&["inspect", &neox]);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        stderr(&out).contains("gpt_neox") && stderr(&out).contains(supported),
        "{}",
        stderr(&out)
    );
}

/// A copy of a committed tiny transformers model (fixtures/transformers-parity) whose config
/// `edit` changes, and optionally with an extra tensor appended to the safetensors file.
fn tiny_model_with(dir: &Path, edit: impl FnOnce(&mut serde_json::Value), extra: bool) -> String {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/transformers-parity/llama-default");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit(&mut config);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let bytes = if extra {
        with_extra_tensor(&bytes)
    } else {
        bytes
    };
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
    dir.display().to_string()
}

/// The safetensors file with one more tensor, `model.layers.0.mlp.extra_proj.weight` (2 f32),
/// appended: a weight no part of the forward pass reads.
fn with_extra_tensor(bytes: &[u8]) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    header["model.layers.0.mlp.extra_proj.weight"] = serde_json::json!({
        "dtype": "F32", "shape": [2], "data_offsets": [data.len(), data.len() + 8]
    });
    let mut h = serde_json::to_vec(&header).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.extend_from_slice(&[0u8; 8]);
    out
}

#[test]
fn configs_pot_cannot_compute_exactly_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown rope type",
            tiny_model_with(
                &dir.path().join("rope"),
                |c| c["rope_parameters"]["rope_type"] = "dynamic".into(),
                false,
            ),
            "rope_parameters.rope_type",
        ),
        (
            "unknown activation",
            tiny_model_with(
                &dir.path().join("act"),
                |c| c["hidden_act"] = "gelu".into(),
                false,
            ),
            "hidden_act",
        ),
        (
            "extra tensor",
            tiny_model_with(&dir.path().join("extra"), |_| {}, true),
            "model.layers.0.mlp.extra_proj.weight",
        ),
        (
            "layout conflict",
            tiny_model_with(
                &dir.path().join("theta"),
                |c| c["rope_theta"] = 500.0.into(),
                false,
            ),
            "disagree",
        ),
        (
            "crafted size",
            tiny_model_with(
                &dir.path().join("layers"),
                |c| c["num_hidden_layers"] = 4_000_000_000u64.into(),
                false,
            ),
            "num_hidden_layers",
        ),
    ];
    for (what, model, needle) in cases {
        let out = pot(&["inspect", &model]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(4), "{what}: {err}");
        assert!(err.contains(needle), "{what}: {err}");
    }
    // Both transformers layouts describe the same function: same architecture hash.
    let five = tiny_model_with(&dir.path().join("five"), |_| {}, false);
    let four = tiny_model_with(
        &dir.path().join("four"),
        |c| {
            let theta = c["rope_parameters"]["rope_theta"].clone();
            c.as_object_mut().unwrap().remove("rope_parameters");
            c["rope_theta"] = theta;
        },
        false,
    );
    let hash = |m: &str| {
        let out = pot(&["inspect", m, "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        v["config_hashes"]["architecture_sha256"].clone()
    };
    assert_eq!(hash(&five), hash(&four));
    assert!(hash(&five).is_string());
}

#[test]
fn monitor_refuses_intervals_that_do_not_exist() {
    for interval in ["1e20", "0", "-1", "nan"] {
        let arg = format!("--interval={interval}");
        let out = pot(&["monitor", &arg, "--duration", "0"]);
        assert_eq!(out.status.code(), Some(2), "{interval}: {}", stderr(&out));
        assert!(stderr(&out).contains("--interval"), "{}", stderr(&out));
    }
}

/// The help states the tolerance values the code uses (docs/STATISTICS.md has the table).
#[test]
fn verify_help_states_the_tolerances_in_use() {
    let help = stdout(&pot(&["verify", "--help"]));
    for (name, gamma) in [
        ("default", pot_stats::DEFAULT_GAMMA),
        ("quantized", pot_stats::QUANTIZED_GAMMA),
    ] {
        assert!(
            help.contains(&format!("`{name}` ({gamma})")),
            "{name}: {help}"
        );
    }
}
