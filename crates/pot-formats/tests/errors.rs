//! Bad input: every case gets an error naming the file and the problem, never a panic.

use std::io::Write;
use std::path::Path;

use pot_formats::fixtures::{SMOLLM2_135M, model_path};
use pot_formats::{FormatError, Model};

const TINY_CONFIG: &str = r#"{"model_type":"llama","hidden_size":4,"intermediate_size":8,
    "num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,"vocab_size":3,
    "tie_word_embeddings":true}"#;

fn open_err(path: &Path) -> String {
    let err = Model::open(path).expect_err("must fail");
    let text = err.to_string();
    assert!(
        text.contains(&path.display().to_string()),
        "error does not name the file: {text}"
    );
    text
}

#[test]
fn missing_file_and_directory_without_config() {
    let dir = tempfile::tempdir().unwrap();
    let text = open_err(&dir.path().join("nope.gguf"));
    assert!(text.contains("does not exist"), "{text}");
    let text = open_err(dir.path());
    assert!(text.contains("without config.json"), "{text}");
    std::fs::write(dir.path().join("config.json"), TINY_CONFIG).unwrap();
    let text = open_err(dir.path());
    assert!(
        text.contains("no weights") || text.contains("model.safetensors"),
        "{text}"
    );
}

#[test]
fn bad_magic_and_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.gguf");
    std::fs::write(&bad, b"NOTGGUF-at-all-just-text").unwrap();
    assert!(open_err(&bad).contains("bad magic"));

    let original = std::fs::read(model_path(SMOLLM2_135M)).unwrap();
    for cut in [10, 1000, original.len() / 2, original.len() - 1] {
        let truncated = dir.path().join(format!("cut{cut}.gguf"));
        std::fs::write(&truncated, &original[..cut]).unwrap();
        let text = open_err(&truncated);
        assert!(
            text.contains("corrupted or truncated"),
            "cut at {cut}: {text}"
        );
    }
}

#[test]
fn unsupported_architecture_and_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read(model_path(SMOLLM2_135M)).unwrap();

    // Rename the architecture in place ("llama" -> "llamb", same length).
    let mut arch = original.clone();
    let at = find(&arch, b"\x05\x00\x00\x00\x00\x00\x00\x00llama").unwrap() + 8;
    arch[at + 4] = b'b';
    let path = dir.path().join("arch.gguf");
    std::fs::write(&path, &arch).unwrap();
    let err = Model::open(&path).unwrap_err();
    assert!(
        matches!(err, FormatError::UnsupportedArchitecture { .. }),
        "{err}"
    );

    // Change the first tensor's type id to Q2_K (10), which pot cannot dequantise.
    let mut dtype = original;
    let name = b"token_embd.weight";
    let at = find(&dtype, name).unwrap() + name.len();
    let type_at = at + 4 + 2 * 8; // n_dims (u32) + two dims (u64)
    dtype[type_at..type_at + 4].copy_from_slice(&10u32.to_le_bytes());
    let path = dir.path().join("dtype.gguf");
    std::fs::write(&path, &dtype).unwrap();
    let text = open_err(&path);
    assert!(
        text.contains("Q2_K") && text.contains("token_embd.weight"),
        "{text}"
    );
}

#[test]
fn safetensors_shape_mismatch_and_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), TINY_CONFIG).unwrap();
    // A safetensors file whose embedding has the wrong shape.
    let header =
        br#"{"model.embed_tokens.weight":{"dtype":"F32","shape":[2,4],"data_offsets":[0,32]}}"#;
    let mut f = std::fs::File::create(dir.path().join("model.safetensors")).unwrap();
    let mut padded = header.to_vec();
    while !padded.len().is_multiple_of(8) {
        padded.push(b' ');
    }
    f.write_all(&(padded.len() as u64).to_le_bytes()).unwrap();
    f.write_all(&padded).unwrap();
    f.write_all(&[0u8; 32]).unwrap();
    drop(f);
    let text = open_err(dir.path());
    assert!(text.contains("embed_tokens"), "{text}");

    std::fs::write(
        dir.path().join("config.json"),
        r#"{"model_type":"gpt_bigcode"}"#,
    )
    .unwrap();
    let text = open_err(dir.path());
    assert!(text.contains("not supported"), "{text}");
    std::fs::write(dir.path().join("config.json"), "{not json").unwrap();
    let text = open_err(dir.path());
    assert!(text.contains("not JSON"), "{text}");
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
