//! `pot provenance digest` / `check-manifest` against OpenSSF model signing itself
//! (`model_signing` 1.1.1 from PyPI, fixtures/provenance/requirements.txt): the same root digest
//! and per-file digests for a real model directory, and a real signed bundle checked against the
//! files. Skipped with a message where no Python imports `model_signing`.

mod common;

use std::path::{Path, PathBuf};

use common::pot;
use serde_json::Value;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// Signs `model` with model_signing itself into `bundle`; what it signed (root, per-file).
fn sign(python: &Path, model: &Path, bundle: &Path) -> Value {
    let out = std::process::Command::new(python)
        .arg(fixtures().join("provenance/model_signing_sign.py"))
        .arg(model)
        .arg(bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_model_signing_digest_is_the_ecosystems() {
    let Some(python) = common::python_with("model_signing, OpenSSL") else {
        println!(
            "skipped: no Python with model_signing (~/.cache/pot/pyenv/bin/pip install -r fixtures/provenance/requirements.txt)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny-llama");
    // A real (tiny) transformers-saved model, plus files that test the rules: a subdirectory
    // ordered by path components ("a/x" before "a.txt", unlike plain string order) and the git
    // files model_signing ignores.
    copy_dir(
        &fixtures().join("transformers-parity/llama-default"),
        &model,
    );
    std::fs::create_dir_all(model.join("a")).unwrap();
    std::fs::write(model.join("a/x"), "x").unwrap();
    std::fs::write(model.join("a.txt"), "t").unwrap();
    std::fs::create_dir_all(model.join(".git")).unwrap();
    std::fs::write(model.join(".git/HEAD"), "ref").unwrap();
    std::fs::write(model.join(".gitattributes"), "*.safetensors lfs").unwrap();

    let bundle = dir.path().join("model.sig");
    let theirs = sign(&python, &model, &bundle);

    let out = pot(&[
        "provenance",
        "digest",
        &model.display().to_string(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ours["root_sha256"], theirs["root"]);
    let names: Vec<&str> = ours["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "a/x",
            "a.txt",
            "config.json",
            "generation_config.json",
            "model.safetensors"
        ]
    );
    for f in ours["files"].as_array().unwrap() {
        assert_eq!(theirs["files"][f["name"].as_str().unwrap()], f["sha256"]);
    }

    // A single-file model (a GGUF, say) is one item named ".".
    let single = model.join("model.safetensors");
    let theirs_single = sign(&python, &single, &dir.path().join("single.sig"));
    let out = pot(&[
        "provenance",
        "digest",
        &single.display().to_string(),
        "--json",
    ]);
    let ours_single: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ours_single["root_sha256"], theirs_single["root"]);
    assert_eq!(ours_single["files"][0]["name"], ".");

    let check = |model: &Path| {
        pot(&[
            "provenance",
            "check-manifest",
            &bundle.display().to_string(),
            &model.display().to_string(),
        ])
    };
    let out = check(&model);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // One changed file and one removed: named, exit 1.
    std::fs::write(model.join("config.json"), "{}").unwrap();
    std::fs::remove_file(model.join("a.txt")).unwrap();
    let out = check(&model);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("DIFFERS  config.json"), "{stdout}");
    assert!(stdout.contains("MISSING  a.txt"), "{stdout}");
}
