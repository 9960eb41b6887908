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

/// A minimal GGUF v3 file: metadata (key, type id, encoded value) and tensor infos (name, dims,
/// ggml type, offset), then `data` after 32-byte alignment. Crafted files need no fixtures.
struct Gguf {
    counts: Option<(u64, u64)>,
    kv: Vec<(String, u32, Vec<u8>)>,
    tensors: Vec<(String, Vec<u64>, u32, u64)>,
    data: Vec<u8>,
}

fn gguf_string(s: &str) -> Vec<u8> {
    let mut out = (s.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(s.as_bytes());
    out
}

impl Gguf {
    fn bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&3u32.to_le_bytes());
        let (t, k) = self
            .counts
            .unwrap_or((self.tensors.len() as u64, self.kv.len() as u64));
        out.extend_from_slice(&t.to_le_bytes());
        out.extend_from_slice(&k.to_le_bytes());
        for (key, ty, value) in &self.kv {
            out.extend(gguf_string(key));
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(value);
        }
        for (name, dims, ty, offset) in &self.tensors {
            out.extend(gguf_string(name));
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
        }
        while !out.len().is_multiple_of(32) {
            out.push(0);
        }
        out.extend_from_slice(&self.data);
        out
    }
}

fn write_gguf(dir: &Path, name: &str, g: &Gguf) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, g.bytes()).unwrap();
    path
}

/// Counts that claim more entries than the file can hold are refused before anything is
/// reserved; a quantised tensor whose rows are not whole blocks is refused at open (it used to
/// open and then panic when read); a `token_type` array longer than the token list is refused.
#[test]
fn crafted_gguf_files_are_refused_not_crashed() {
    let dir = tempfile::tempdir().unwrap();
    // One byte per item on disk, 4e9 items claimed.
    let mut huge_array = 0u32.to_le_bytes().to_vec();
    huge_array.extend_from_slice(&4_000_000_000u64.to_le_bytes());
    huge_array.extend_from_slice(&[0u8; 64]);
    let cases = [
        (
            "counts.gguf",
            Gguf {
                counts: Some((4_000_000_000, 1)),
                kv: vec![],
                tensors: vec![],
                data: vec![0; 64],
            },
            "cannot fit",
        ),
        (
            "array.gguf",
            Gguf {
                counts: None,
                kv: vec![("x".into(), 9, huge_array)],
                tensors: vec![],
                data: vec![],
            },
            "cannot fit",
        ),
        (
            "rows.gguf",
            Gguf {
                counts: None,
                kv: vec![],
                // Q8_0 (type 8), rows of 48 values, two rows: 96 values = 3 whole blocks.
                tensors: vec![("token_embd.weight".into(), vec![48, 2], 8, 0)],
                data: vec![0; 3 * 34],
            },
            "not whole Q8_0 blocks",
        ),
        (
            "overflow.gguf",
            Gguf {
                counts: None,
                kv: vec![],
                tensors: vec![("t".into(), vec![1 << 62, 1 << 3], 0, 0)],
                data: vec![],
            },
            "overflows",
        ),
    ];
    for (name, g, needle) in cases {
        let path = write_gguf(dir.path(), name, &g);
        let text = open_err(&path);
        assert!(text.contains(needle), "{name}: {text}");
    }
}

#[test]
fn a_token_type_array_longer_than_the_tokens_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let string_array = |items: &[&str]| {
        let mut v = 8u32.to_le_bytes().to_vec();
        v.extend_from_slice(&(items.len() as u64).to_le_bytes());
        for s in items {
            v.extend(gguf_string(s));
        }
        v
    };
    let mut types = 5u32.to_le_bytes().to_vec(); // i32 items
    types.extend_from_slice(&3u64.to_le_bytes());
    for _ in 0..3 {
        types.extend_from_slice(&1i32.to_le_bytes());
    }
    let g = Gguf {
        counts: None,
        kv: vec![
            ("tokenizer.ggml.model".into(), 8, gguf_string("gpt2")),
            ("tokenizer.ggml.tokens".into(), 9, string_array(&["a", "b"])),
            ("tokenizer.ggml.merges".into(), 9, string_array(&["a b"])),
            ("tokenizer.ggml.token_type".into(), 9, types),
        ],
        tensors: vec![],
        data: vec![],
    };
    let path = write_gguf(dir.path(), "types.gguf", &g);
    let file = pot_formats::gguf::GgufFile::open(&path).unwrap();
    let err = pot_formats::Tokenizer::from_gguf(&file)
        .unwrap_err()
        .to_string();
    assert!(err.contains("3 entries for 2 tokens"), "{err}");
}

/// A key the reference implementation has no default for is required, never defaulted: a
/// llama GGUF without `llama.attention.layer_norm_rms_epsilon` (llama.cpp requires it) is
/// refused naming the key; an unknown RoPE scaling type is refused naming key and value.
#[test]
fn gguf_keys_without_a_default_are_required() {
    let dir = tempfile::tempdir().unwrap();
    let u32v = |v: u32| v.to_le_bytes().to_vec();
    let f32v = |v: f32| v.to_le_bytes().to_vec();
    let base = |extra: Vec<(String, u32, Vec<u8>)>| {
        let mut kv = vec![
            ("general.architecture".to_string(), 8, gguf_string("llama")),
            ("llama.embedding_length".into(), 4, u32v(8)),
            ("llama.feed_forward_length".into(), 4, u32v(16)),
            ("llama.block_count".into(), 4, u32v(1)),
            ("llama.attention.head_count".into(), 4, u32v(2)),
            ("llama.vocab_size".into(), 4, u32v(4)),
        ];
        kv.extend(extra);
        Gguf {
            counts: None,
            kv,
            tensors: vec![],
            data: vec![],
        }
    };
    let config = |g: &Gguf, name: &str| {
        let path = write_gguf(dir.path(), name, g);
        let file = pot_formats::gguf::GgufFile::open(&path).unwrap();
        pot_formats::ModelConfig::from_gguf(&file)
    };
    let err = config(&base(vec![]), "no-eps.gguf")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("llama.attention.layer_norm_rms_epsilon"),
        "{err}"
    );
    let eps = (
        "llama.attention.layer_norm_rms_epsilon".to_string(),
        6,
        f32v(1e-5),
    );
    let ok = config(&base(vec![eps.clone()]), "ok.gguf").unwrap();
    assert_eq!(ok.rope_theta, 10_000.0, "llama.cpp's default freq_base");
    let scaling = (
        "llama.rope.scaling.type".to_string(),
        8,
        gguf_string("longrope"),
    );
    let err = config(&base(vec![eps, scaling]), "longrope.gguf")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("llama.rope.scaling.type") && err.contains("longrope"),
        "{err}"
    );
}
