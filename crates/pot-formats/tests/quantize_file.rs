//! `quantize_gguf` against llama.cpp's `llama_model_quantize` (byte for byte, on the SmolLM2
//! fixture) and on a small llama-shaped file made here.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use pot_formats::dtype::{DType, dequantize};
use pot_formats::fixtures::{SMOLLM2_135M, cache_dir, model_path};
use pot_formats::gguf::{GgufFile, Value};
use pot_formats::gguf_write::{self, Entry, TensorSpec};
use pot_formats::quantize::{self, FileType, RecipeModel, llama_tensor_order};
use pot_formats::quantize_file::{
    QuantizeFileError, QuantizeOptions, QuantizeSummary, quantize_gguf,
};

// ------------------------------------------------------------------------------------------------
// Byte identity with llama.cpp on the real fixture
// ------------------------------------------------------------------------------------------------

/// The file types compared with llama.cpp, as `fixtures/deployments/make.py` names them.
const TYPES: [&str; 11] = [
    "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k", "f16",
];

/// A Python that imports `modules`: `$POT_PYTHON`, the venv `~/.cache/pot/pyenv`, or `python3`
/// (the convention of crates/pot-cli/tests/common/mod.rs).
fn python_with(modules: &str) -> Option<PathBuf> {
    let venv =
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/pot/pyenv/bin/python"));
    let candidates = std::env::var_os("POT_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain(venv.filter(|v| v.is_file()))
        .chain(std::iter::once("python3".into()));
    for python in candidates {
        let ok = Command::new(&python)
            .args(["-c", &format!("import {modules}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(python);
        }
    }
    None
}

/// Where llama.cpp's files are cached: `$POT_DEPLOY`, else `deploy/` next to the fixture models'
/// directory (`~/.cache/pot/deploy`).
fn deploy_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("POT_DEPLOY") {
        return PathBuf::from(dir);
    }
    let fixtures = cache_dir();
    fixtures
        .parent()
        .map_or_else(|| fixtures.join("deploy"), |p| p.join("deploy"))
}

/// Where the first byte of difference falls in a GGUF file.
fn region(file: &GgufFile, offset: usize) -> String {
    if offset < 24 {
        return "the GGUF header (magic, version, counts)".into();
    }
    if let Some((key, _)) = file.entries.iter().find(|(_, r)| r.contains(&offset)) {
        return format!("metadata entry `{key}`");
    }
    let data_start = file
        .tensors
        .iter()
        .map(|t| t.start)
        .min()
        .unwrap_or(usize::MAX);
    if offset < data_start {
        return "the tensor infos (or the padding before the data)".into();
    }
    for t in &file.tensors {
        if (t.start..t.start + t.len).contains(&offset) {
            return format!(
                "tensor `{}` ({}, byte {} of {})",
                t.name,
                t.dtype.name(),
                offset - t.start,
                t.len
            );
        }
    }
    let before = file
        .tensors
        .iter()
        .filter(|t| t.start + t.len <= offset)
        .max_by_key(|t| t.start);
    match before {
        Some(t) => format!("the padding after tensor `{}`", t.name),
        None => "somewhere outside every tensor".into(),
    }
}

/// `None` when the files are identical, else where they first differ.
fn compare(ours: &Path, theirs: &Path) -> Option<String> {
    let a = std::fs::read(ours).unwrap();
    let b = std::fs::read(theirs).unwrap();
    let first = a.iter().zip(&b).position(|(x, y)| x != y);
    let at = match first {
        Some(i) => i,
        None if a.len() == b.len() => return None,
        None => a.len().min(b.len()),
    };
    let reference = GgufFile::open(theirs).unwrap();
    Some(format!(
        "first difference at byte {at} of {} (pot) / {} (llama.cpp), in {} of llama.cpp's file",
        a.len(),
        b.len(),
        region(&reference, at)
    ))
}

#[test]
fn smollm2_quantised_like_llama_cpp_byte_for_byte() {
    let fixture = model_path(SMOLLM2_135M);
    let deploy = deploy_dir();
    let stem = SMOLLM2_135M.trim_end_matches(".gguf");
    let f32_path = deploy.join(format!("{stem}.F32.gguf"));
    let reference = |t: &str| deploy.join(format!("{stem}.from-f32.{}.gguf", t.to_uppercase()));
    let missing: Vec<&str> = TYPES
        .iter()
        .copied()
        .filter(|t| !reference(t).is_file())
        .collect();
    if !missing.is_empty() || !f32_path.is_file() {
        let Some(python) = python_with("llama_cpp, gguf, numpy") else {
            println!(
                "skipped: no Python with llama-cpp-python and gguf to make llama.cpp's reference files (~/.cache/pot/pyenv/bin/pip install llama-cpp-python==0.3.36 gguf==0.19.0 numpy)"
            );
            return;
        };
        std::fs::create_dir_all(&deploy).unwrap();
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/deployments/make.py");
        let out = Command::new(&python)
            .arg(&script)
            .arg(&fixture)
            .arg(&deploy)
            .args(&missing)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} {} failed:\n{}\n{}",
            python.display(),
            script.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        f32_path.is_file(),
        "make.py did not write {}",
        f32_path.display()
    );

    let dir = tempfile::tempdir().unwrap();
    let mut differing = Vec::new();
    for name in TYPES {
        let ftype: FileType = name.parse().unwrap();
        let ours = dir.path().join(format!("{name}.gguf"));
        let start = Instant::now();
        let summary = quantize_gguf(
            &f32_path,
            ftype,
            &ours,
            QuantizeOptions::default(),
            |_, _| {},
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let secs = start.elapsed().as_secs_f64();
        let verdict = compare(&ours, &reference(name));
        println!(
            "{name}: {secs:.2} s, {} tensors, {:.2} BPW, {} -> {} bytes, {} fallbacks: {}",
            summary.by_type.iter().map(|s| s.tensors).sum::<usize>(),
            summary.bits_per_weight(),
            summary.bytes_in,
            summary.file_bytes,
            summary.n_fallback,
            verdict.as_deref().unwrap_or("byte-identical to llama.cpp")
        );
        if let Some(v) = verdict {
            differing.push(format!("{name}: {v}"));
        }
        std::fs::remove_file(&ours).unwrap();
    }
    assert!(
        differing.is_empty(),
        "pot's output differs from llama_model_quantize:\n{}",
        differing.join("\n")
    );
}

/// `llama_model_quantize` with `allow_requantize` (llama-quantize --allow-requantize), which
/// make.py does not offer: SRC DST TYPE.
const REQUANTIZE_PY: &str = r#"
import ctypes, os, sys, llama_cpp
src, dst, name = sys.argv[1:4]
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + name.upper())
params.nthread = 2
params.allow_requantize = True
if llama_cpp.llama_model_quantize(src.encode(), (dst + ".tmp").encode(), ctypes.byref(params)) != 0:
    raise SystemExit("llama_model_quantize " + name + " failed")
os.rename(dst + ".tmp", dst)
"#;

/// The Q4_1 fixture itself as the source: its tensors dequantised (as ggml's `to_float`) and
/// quantised again, or copied where the type stays.
#[test]
fn smollm2_requantised_like_llama_cpp_byte_for_byte() {
    let fixture = model_path(SMOLLM2_135M);
    let deploy = deploy_dir();
    let stem = SMOLLM2_135M.trim_end_matches(".gguf");
    let types = ["q8_0", "q4_1", "q4_k_m", "f16"];
    let reference = |t: &str| deploy.join(format!("{stem}.requantized.{}.gguf", t.to_uppercase()));
    let missing: Vec<&str> = types
        .iter()
        .copied()
        .filter(|t| !reference(t).is_file())
        .collect();
    if !missing.is_empty() {
        let Some(python) = python_with("llama_cpp") else {
            println!(
                "skipped: no Python with llama-cpp-python to make llama.cpp's reference files (~/.cache/pot/pyenv/bin/pip install llama-cpp-python==0.3.36)"
            );
            return;
        };
        std::fs::create_dir_all(&deploy).unwrap();
        for t in missing {
            let out = Command::new(&python)
                .args(["-c", REQUANTIZE_PY])
                .arg(&fixture)
                .arg(reference(t))
                .arg(t)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "llama_model_quantize {t} failed:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let mut differing = Vec::new();
    for name in types {
        let ftype: FileType = name.parse().unwrap();
        let ours = dir.path().join(format!("{name}.gguf"));
        // Refused without the flag, except Q4_1 to Q4_1: every tensor keeps its type (the tied
        // embedding is Q8_0 in the fixture and stays Q8_0), nothing is requantised.
        let plain = quantize_gguf(
            &fixture,
            ftype,
            &ours,
            QuantizeOptions::default(),
            |_, _| {},
        );
        let summary = if name == "q4_1" {
            let summary = plain.unwrap();
            assert!(summary.by_type.iter().all(|s| s.copied == s.tensors));
            summary
        } else {
            let err = plain.unwrap_err();
            assert!(
                matches!(err, QuantizeFileError::Requantize { .. }),
                "{name}: {err}"
            );
            let options = QuantizeOptions {
                allow_requantize: true,
            };
            quantize_gguf(&fixture, ftype, &ours, options, |_, _| {})
                .unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        let verdict = compare(&ours, &reference(name));
        let copied: usize = summary.by_type.iter().map(|s| s.copied).sum();
        println!(
            "from Q4_1 to {name}: {copied} tensors copied: {}",
            verdict.as_deref().unwrap_or("byte-identical to llama.cpp")
        );
        if let Some(v) = verdict {
            differing.push(format!("{name}: {v}"));
        }
        std::fs::remove_file(&ours).unwrap();
    }
    assert!(
        differing.is_empty(),
        "pot's output differs from llama_model_quantize --allow-requantize:\n{}",
        differing.join("\n")
    );
}

// ------------------------------------------------------------------------------------------------
// A small llama-shaped model
// ------------------------------------------------------------------------------------------------

const D: u64 = 256;
/// Not a multiple of 256: ffn_down's rows fall back from the K-quants.
const FF: u64 = 320;
const N_KV: u64 = 128;
const VOCAB: u64 = 64;
const LAYERS: u32 = 2;

struct Xorshift(u32);

impl Xorshift {
    /// Uniform in [-scale, scale).
    fn next(&mut self, scale: f32) -> f32 {
        let mut s = self.0;
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        self.0 = s;
        ((s >> 8) as f32 / (1 << 23) as f32 - 1.0) * scale
    }
}

/// Tensors of a 2-layer llama (GGML dims), in an order that is not llama.cpp's.
fn tiny_tensors() -> Vec<(String, Vec<u64>)> {
    let mut t: Vec<(String, Vec<u64>)> = vec![("token_embd.weight".into(), vec![D, VOCAB])];
    for i in (0..LAYERS).rev() {
        for (s, dims) in [
            ("ffn_down.weight", vec![FF, D]),
            ("attn_q.weight", vec![D, D]),
            ("attn_k.weight", vec![D, N_KV]),
            ("attn_v.weight", vec![D, N_KV]),
            ("attn_output.weight", vec![D, D]),
            ("attn_norm.weight", vec![D]),
            ("ffn_norm.weight", vec![D]),
            ("ffn_gate.weight", vec![D, FF]),
            ("ffn_up.weight", vec![D, FF]),
        ] {
            t.push((format!("blk.{i}.{s}"), dims));
        }
    }
    t.push(("output_norm.weight".into(), vec![D]));
    t.push(("output.weight".into(), vec![D, VOCAB]));
    t
}

fn tiny_values(tensors: &[(String, Vec<u64>)]) -> Vec<Vec<f32>> {
    let mut g = Xorshift(0x9e37_79b9);
    tensors
        .iter()
        .map(|(name, dims)| {
            let n = dims.iter().product::<u64>() as usize;
            if name.ends_with("norm.weight") {
                (0..n).map(|_| 1.0 + g.next(0.1)).collect()
            } else {
                // Rows of different magnitudes, as real weights have.
                let row = dims[0] as usize;
                let mut scale = 0.02;
                (0..n)
                    .map(|i| {
                        if i % row == 0 {
                            scale = 0.01 + g.next(0.01).abs() * 4.0;
                        }
                        g.next(scale)
                    })
                    .collect()
            }
        })
        .collect()
}

/// The metadata of the tiny model, with `general.file_type` and
/// `general.quantization_version` in the middle (llama.cpp moves them to the end).
fn tiny_entries() -> Vec<Entry<'static>> {
    let u = Value::U32;
    vec![
        Entry::New("general.architecture", Value::String("llama".into())),
        Entry::New("general.name", Value::String("tiny".into())),
        Entry::New("general.file_type", u(0)),
        Entry::New("llama.block_count", u(LAYERS)),
        Entry::New("llama.context_length", u(128)),
        Entry::New("llama.embedding_length", u(D as u32)),
        Entry::New("general.quantization_version", u(2)),
        Entry::New("llama.feed_forward_length", u(FF as u32)),
        Entry::New("llama.attention.head_count", u(4)),
        Entry::New("llama.attention.head_count_kv", u(2)),
        Entry::New("llama.rope.freq_base", Value::F32(10000.0)),
        Entry::New(
            "tokenizer.ggml.tokens",
            Value::Array((0..VOCAB).map(|i| Value::String(format!("t{i}"))).collect()),
        ),
    ]
}

fn write_f32_gguf(
    path: &Path,
    entries: &[Entry],
    tensors: &[(String, Vec<u64>)],
    values: &[Vec<f32>],
) {
    write_f32_gguf_aligned(32, path, entries, tensors, values);
}

fn write_f32_gguf_aligned(
    alignment: u64,
    path: &Path,
    entries: &[Entry],
    tensors: &[(String, Vec<u64>)],
    values: &[Vec<f32>],
) {
    let specs: Vec<TensorSpec> = tensors
        .iter()
        .map(|(name, dims)| TensorSpec {
            name: name.clone(),
            dims: dims.clone(),
            dtype: DType::F32,
        })
        .collect();
    gguf_write::write(path, entries, &specs, alignment, |i| {
        Ok(values[i].iter().flat_map(|v| v.to_le_bytes()).collect())
    })
    .unwrap();
}

/// Tensor names and GGML dims.
type Tensors = Vec<(String, Vec<u64>)>;

fn write_tiny(dir: &Path) -> (PathBuf, Tensors, Vec<Vec<f32>>) {
    let tensors = tiny_tensors();
    let values = tiny_values(&tensors);
    let path = dir.join("tiny.f32.gguf");
    write_f32_gguf(&path, &tiny_entries(), &tensors, &values);
    (path, tensors, values)
}

fn run(src: &Path, ftype: FileType, out: &Path) -> Result<QuantizeSummary, QuantizeFileError> {
    quantize_gguf(src, ftype, out, QuantizeOptions::default(), |_, _| {})
}

fn check_tiny(
    ftype: FileType,
    src: &Path,
    out: &Path,
    tensors: &[(String, Vec<u64>)],
    values: &[Vec<f32>],
) {
    let mut calls = Vec::new();
    let summary = quantize_gguf(
        src,
        ftype,
        out,
        QuantizeOptions::default(),
        |done, total| calls.push((done, total)),
    )
    .unwrap();
    let n = tensors.len();
    assert_eq!(calls.first(), Some(&(0, n)));
    assert_eq!(calls.last(), Some(&(n, n)));
    assert_eq!(calls.len(), n + 1);

    let back = GgufFile::open(out).unwrap();
    let bytes = std::fs::read(out).unwrap();

    // Keys: the source's in order, then quantization_version and file_type.
    let keys: Vec<&str> = back.entries.iter().map(|(k, _)| k.as_str()).collect();
    let src_file = GgufFile::open(src).unwrap();
    let mut want: Vec<&str> = src_file
        .entries
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !matches!(*k, "general.file_type" | "general.quantization_version"))
        .collect();
    want.extend(["general.quantization_version", "general.file_type"]);
    assert_eq!(keys, want);
    assert_eq!(
        back.get("general.quantization_version"),
        Some(&Value::U32(2))
    );
    assert_eq!(
        back.get("general.file_type"),
        Some(&Value::U32(ftype.llama_ftype()))
    );
    // Copied entries are byte for byte the source's.
    for (key, span) in &src_file.entries {
        if let Some((_, out_span)) = back.entries.iter().find(|(k, _)| k == key)
            && !key.starts_with("general.file_type")
            && !key.starts_with("general.quantization_version")
        {
            assert_eq!(
                &src_file.mapped()[span.clone()],
                &bytes[out_span.clone()],
                "{key}"
            );
        }
    }

    // Tensors in llama.cpp's order, with the recipe's types.
    let mut names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_by(|a, b| llama_tensor_order(a, b));
    let got: Vec<&str> = back.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(got, names);
    assert_eq!(
        got[..3],
        ["output.weight", "output_norm.weight", "token_embd.weight"]
    );
    let specs: Vec<(&str, &[u64], DType)> = tensors
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice(), DType::F32))
        .collect();
    let plan = quantize::plan(ftype, RecipeModel::new("llama", LAYERS, 4, 2), &specs).unwrap();
    for (p, t) in plan.iter().zip(&back.tensors) {
        assert_eq!((&p.name, p.target), (&t.name, t.dtype));
    }

    // Alignment: every tensor's data at a multiple of 32, zero padding, the file a multiple of 32.
    assert_eq!(bytes.len() % 32, 0);
    for t in &back.tensors {
        assert_eq!(t.start % 32, 0, "{}", t.name);
        let pad_end = (t.start + t.len).next_multiple_of(32);
        assert!(
            bytes[t.start + t.len..pad_end].iter().all(|&b| b == 0),
            "{}",
            t.name
        );
    }
    // Values: exactly the quantiser's bytes, and close to the originals.
    let mut counted = 0;
    for t in &back.tensors {
        let i = tensors.iter().position(|(n, _)| *n == t.name).unwrap();
        let ((name, dims), original) = (&tensors[i], &values[i]);
        assert_eq!(&t.dims, dims, "{name}");
        let want_bytes = quantize::quantize(t.dtype, original, dims[0] as usize).unwrap();
        assert!(
            back.bytes(t) == want_bytes.as_slice(),
            "{name}: bytes differ from quantize()"
        );
        let mut got = vec![0f32; original.len()];
        dequantize(t.dtype, back.bytes(t), &mut got);
        let err: f64 = got
            .iter()
            .zip(original)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum();
        let norm: f64 = original.iter().map(|&b| f64::from(b).powi(2)).sum();
        let rel = (err / norm).sqrt();
        let bound = match t.dtype {
            DType::F32 => 0.0,
            DType::F16 | DType::BF16 => 0.005,
            DType::Q8_0 => 0.01,
            DType::Q6_K | DType::Q5_0 | DType::Q5_1 | DType::Q5_K => 0.05,
            DType::Q4_0 | DType::Q4_1 | DType::Q4_K => 0.12,
        };
        assert!(
            rel <= bound,
            "{name} as {:?}: relative RMS error {rel}",
            t.dtype
        );
        counted += 1;
    }
    assert_eq!(counted, n);

    // The summary adds up.
    assert_eq!(summary.by_type.iter().map(|s| s.tensors).sum::<usize>(), n);
    assert_eq!(summary.file_bytes, bytes.len() as u64);
    assert_eq!(
        summary.bytes_out,
        back.tensors.iter().map(|t| t.len as u64).sum::<u64>()
    );
    assert_eq!(
        summary.bytes_in,
        values.iter().map(|v| v.len() as u64 * 4).sum::<u64>()
    );
    for s in &summary.by_type {
        let of_type: Vec<_> = back.tensors.iter().filter(|t| t.dtype == s.dtype).collect();
        assert_eq!(of_type.len(), s.tensors, "{:?}", s.dtype);
        assert_eq!(
            of_type.iter().map(|t| t.len as u64).sum::<u64>(),
            s.bytes_out
        );
        assert_eq!(s.copied, if s.dtype == DType::F32 { s.tensors } else { 0 });
    }
}

#[test]
fn a_small_llama_file_quantises_to_q8_0_and_q4_k_m() {
    let dir = tempfile::tempdir().unwrap();
    let (src, tensors, values) = write_tiny(dir.path());

    let q8 = dir.path().join("tiny.q8_0.gguf");
    check_tiny(FileType::Q8_0, &src, &q8, &tensors, &values);
    let q8_file = GgufFile::open(&q8).unwrap();
    assert!(q8_file.tensors.iter().all(|t| t.dtype
        == if t.dims.len() == 1 {
            DType::F32
        } else {
            DType::Q8_0
        }));

    let q4km = dir.path().join("tiny.q4_k_m.gguf");
    check_tiny(FileType::Q4_K_M, &src, &q4km, &tensors, &values);
    let file = GgufFile::open(&q4km).unwrap();
    let ty = |n: &str| file.tensor(n).unwrap().dtype;
    // Untied output with 256-wide rows: Q6_K; the embedding stays at the default Q4_K.
    assert_eq!(ty("output.weight"), DType::Q6_K);
    assert_eq!(ty("token_embd.weight"), DType::Q4_K);
    assert_eq!(ty("blk.0.attn_q.weight"), DType::Q4_K);
    // use_more_bits(i, 2) holds for layer 1 only (i >= 7 * 2 / 8): Q6_K there.
    assert_eq!(ty("blk.0.attn_v.weight"), DType::Q4_K);
    assert_eq!(ty("blk.1.attn_v.weight"), DType::Q6_K);
    // 320-wide rows: Q4_K falls back to Q5_0, Q6_K to Q8_0.
    assert_eq!(ty("blk.0.ffn_down.weight"), DType::Q5_0);
    assert_eq!(ty("blk.1.ffn_down.weight"), DType::Q8_0);
    assert_eq!(ty("blk.0.attn_norm.weight"), DType::F32);
    let summary = run(&src, FileType::Q4_K_M, &dir.path().join("again.gguf")).unwrap();
    assert_eq!(summary.n_fallback, 2);
    assert_eq!(
        std::fs::read(&q4km).unwrap(),
        std::fs::read(dir.path().join("again.gguf")).unwrap(),
        "deterministic"
    );

    // A quantised source: Q8_0 to Q8_0 copies every tensor (no requantisation), which gives the
    // Q8_0 file back byte for byte.
    let same = dir.path().join("q8_again.gguf");
    run(&q8, FileType::Q8_0, &same).unwrap();
    assert_eq!(std::fs::read(&q8).unwrap(), std::fs::read(&same).unwrap());
    // Q8_0 to Q4_K_M is refused without allow_requantize, naming the tensor...
    let err = run(&q8, FileType::Q4_K_M, &dir.path().join("re.gguf")).unwrap_err();
    assert!(matches!(err, QuantizeFileError::Requantize { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("output.weight") && msg.contains("allow"),
        "{msg}"
    );
    assert!(!dir.path().join("re.gguf").exists());
    // ...and done with it, from the dequantised Q8_0 values.
    let re = dir.path().join("re.gguf");
    let options = QuantizeOptions {
        allow_requantize: true,
    };
    quantize_gguf(&q8, FileType::Q4_K_M, &re, options, |_, _| {}).unwrap();
    let re_file = GgufFile::open(&re).unwrap();
    for t in &re_file.tensors {
        assert_eq!(t.dtype, file.tensor(&t.name).unwrap().dtype, "{}", t.name);
        let src_t = q8_file.tensor(&t.name).unwrap();
        let mut x = vec![0f32; src_t.elements() as usize];
        dequantize(src_t.dtype, q8_file.bytes(src_t), &mut x);
        let want = quantize::quantize(t.dtype, &x, t.dims[0] as usize).unwrap();
        assert!(re_file.bytes(t) == want.as_slice(), "{}", t.name);
    }

    // F16: every 2-D weight in F16, the norms kept in F32.
    let f16 = dir.path().join("tiny.f16.gguf");
    run(&src, FileType::F16, &f16).unwrap();
    let f16_file = GgufFile::open(&f16).unwrap();
    for t in &f16_file.tensors {
        let want = if t.dims.len() == 1 {
            DType::F32
        } else {
            DType::F16
        };
        assert_eq!(t.dtype, want, "{}", t.name);
    }
}

#[test]
fn bad_sources_are_refused_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (src, tensors, mut values) = write_tiny(dir.path());
    let out = dir.path().join("out.gguf");

    // A Hugging Face directory.
    let hf = dir.path().join("hf");
    std::fs::create_dir(&hf).unwrap();
    std::fs::write(hf.join("config.json"), "{}").unwrap();
    let msg = run(&hf, FileType::Q4_K_M, &out).unwrap_err().to_string();
    assert!(
        msg.contains("Hugging Face model directory")
            && msg.contains("convert_hf_to_gguf.py")
            && msg.contains("pot convert"),
        "{msg}"
    );
    // A safetensors file.
    let st = dir.path().join("model.safetensors");
    std::fs::write(
        &st,
        [
            8u8, 0, 0, 0, 0, 0, 0, 0, b'{', b'}', b' ', b' ', b' ', b' ', b' ', b' ',
        ],
    )
    .unwrap();
    let msg = run(&st, FileType::Q8_0, &out).unwrap_err().to_string();
    assert!(
        msg.contains("safetensors file") && msg.contains("convert_hf_to_gguf.py"),
        "{msg}"
    );
    // A missing file.
    let msg = run(&dir.path().join("nope.gguf"), FileType::Q8_0, &out)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("not found"), "{msg}");
    // The output is the source.
    let err = run(&src, FileType::Q8_0, &src).unwrap_err();
    assert!(matches!(err, QuantizeFileError::SameFile { .. }), "{err}");

    // No architecture.
    let no_arch = dir.path().join("no_arch.gguf");
    let entries: Vec<Entry> = tiny_entries()
        .into_iter()
        .filter(|e| !matches!(e, Entry::New("general.architecture", _)))
        .collect();
    write_f32_gguf(&no_arch, &entries, &tensors, &values);
    let msg = run(&no_arch, FileType::Q8_0, &out).unwrap_err().to_string();
    assert!(msg.contains("general.architecture"), "{msg}");
    // No block count.
    let no_layers = dir.path().join("no_layers.gguf");
    let entries: Vec<Entry> = tiny_entries()
        .into_iter()
        .filter(|e| !matches!(e, Entry::New("llama.block_count", _)))
        .collect();
    write_f32_gguf(&no_layers, &entries, &tensors, &values);
    let msg = run(&no_layers, FileType::Q8_0, &out)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("llama.block_count"), "{msg}");
    // Part of a split model.
    let split = dir.path().join("split.gguf");
    let mut entries = tiny_entries();
    entries.push(Entry::New("split.no", Value::U16(0)));
    entries.push(Entry::New("split.count", Value::U16(3)));
    write_f32_gguf(&split, &entries, &tensors, &values);
    let msg = run(&split, FileType::Q8_0, &out).unwrap_err().to_string();
    assert!(
        msg.contains("part 1 of a model split into 3") && msg.contains("merge"),
        "{msg}"
    );
    // An alignment llama.cpp would not honour.
    let aligned = dir.path().join("aligned.gguf");
    let mut entries = tiny_entries();
    entries.push(Entry::New("general.alignment", Value::U32(64)));
    write_f32_gguf_aligned(64, &aligned, &entries, &tensors, &values);
    let msg = run(&aligned, FileType::Q8_0, &out).unwrap_err().to_string();
    assert!(msg.contains("general.alignment"), "{msg}");

    // A NaN in a weight: refused as llama.cpp refuses it, naming the tensor, nothing written.
    let i = tensors
        .iter()
        .position(|(n, _)| n == "blk.1.ffn_up.weight")
        .unwrap();
    values[i][1000] = f32::NAN;
    let nan = dir.path().join("nan.gguf");
    write_f32_gguf(&nan, &tiny_entries(), &tensors, &values);
    let err = run(&nan, FileType::Q8_0, &out).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, QuantizeFileError::InvalidData { .. }),
        "{msg}"
    );
    assert!(
        msg.contains("blk.1.ffn_up.weight") && msg.contains("value 1000"),
        "{msg}"
    );
    // Infinity in a norm (copied, not quantised): refused too.
    values[i][1000] = 0.0;
    let j = tensors
        .iter()
        .position(|(n, _)| n == "output_norm.weight")
        .unwrap();
    values[j][3] = f32::INFINITY;
    write_f32_gguf(&nan, &tiny_entries(), &tensors, &values);
    let msg = run(&nan, FileType::Q8_0, &out).unwrap_err().to_string();
    assert!(msg.contains("output_norm.weight"), "{msg}");
    assert!(!out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty());
}

/// The byte-identity test's report: where the first difference falls.
#[test]
fn a_difference_is_reported_with_its_region() {
    let dir = tempfile::tempdir().unwrap();
    let (src, _, _) = write_tiny(dir.path());
    let a = dir.path().join("a.gguf");
    run(&src, FileType::Q8_0, &a).unwrap();
    let file = GgufFile::open(&a).unwrap();
    let bytes = std::fs::read(&a).unwrap();
    assert_eq!(compare(&a, &a), None);
    let flip = |at: usize| {
        let b = dir.path().join("b.gguf");
        let mut changed = bytes.clone();
        changed[at] ^= 1;
        std::fs::write(&b, changed).unwrap();
        compare(&b, &a).unwrap()
    };
    let (_, span) = &file.entries[1];
    let msg = flip(span.start + 3);
    assert!(msg.contains(&format!("byte {}", span.start + 3)), "{msg}");
    assert!(msg.contains("metadata entry `general.name`"), "{msg}");
    let t = file.tensor("blk.0.attn_k.weight").unwrap();
    let msg = flip(t.start + 40);
    assert!(
        msg.contains("tensor `blk.0.attn_k.weight` (Q8_0, byte 40 of"),
        "{msg}"
    );
    let msg = flip(file.entries.last().unwrap().1.end + 2);
    assert!(msg.contains("the tensor infos"), "{msg}");
    let b = dir.path().join("b.gguf");
    std::fs::write(&b, &bytes[..bytes.len() - 32]).unwrap();
    let msg = compare(&b, &a).unwrap();
    assert!(
        msg.contains(&format!("at byte {}", bytes.len() - 32)),
        "{msg}"
    );
}
