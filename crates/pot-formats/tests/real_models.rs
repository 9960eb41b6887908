//! pot-formats against independent references on the real fixture models.

use std::path::PathBuf;

use pot_formats::dtype::{DType, dequantize};
use pot_formats::fixtures::{GEMMA3_270M, QWEN_CODER_05B, SMOLLM2_135M, model_path};
use pot_formats::gguf::GgufFile;
use pot_formats::{Model, convert};
use serde_json::Value;

fn fixture(rel: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(rel);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Every block format against gguf-py's dequantize on random blocks (fixtures/dequant).
#[test]
fn every_block_format_matches_gguf_py() {
    let reference = fixture("dequant/reference.json");
    let blocks = reference["blocks"].as_object().unwrap();
    assert_eq!(blocks.len(), DType::ALL.len());
    for dtype in DType::ALL {
        let case = &blocks[dtype.name()];
        let bytes = hex_decode(case["bytes"].as_str().unwrap());
        let want: Vec<f64> = case["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let mut got = vec![0f32; want.len()];
        dequantize(dtype, &bytes, &mut got);
        let max_err = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (*g as f64 - w).abs())
            .fold(0.0, f64::max);
        let scale = want.iter().map(|w| w.abs()).fold(0.0, f64::max).max(1e-12);
        assert!(
            max_err <= 1e-6 * scale,
            "{}: max abs error {max_err} (scale {scale})",
            dtype.name()
        );
    }
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Reads and dequantises every tensor of both fixture models and compares with gguf-py.
#[test]
fn every_tensor_of_the_fixture_models_matches_gguf_py() {
    let reference = fixture("dequant/reference.json");
    for file in [SMOLLM2_135M, QWEN_CODER_05B] {
        let gguf = GgufFile::open(&model_path(file)).unwrap();
        let tensors = reference["models"][file].as_object().unwrap();
        assert_eq!(tensors.len(), gguf.tensors.len(), "{file}");
        let mut worst = 0.0f64;
        for t in &gguf.tensors {
            let r = &tensors[&t.name];
            assert_eq!(r["type"].as_str().unwrap(), t.dtype.name(), "{}", t.name);
            let mut values = vec![0f32; t.elements() as usize];
            dequantize(t.dtype, gguf.bytes(t), &mut values);
            for (i, w) in r["sample_index"]
                .as_array()
                .unwrap()
                .iter()
                .zip(r["sample"].as_array().unwrap())
            {
                let err = (values[i.as_u64().unwrap() as usize] as f64 - w.as_f64().unwrap()).abs();
                worst = worst.max(err);
            }
            let sum: f64 = values.iter().map(|&v| v as f64).sum();
            let want = r["sum"].as_f64().unwrap();
            let sum_sq: f64 = values.iter().map(|&v| (v as f64).powi(2)).sum();
            assert!(
                (sum - want).abs() <= 1e-6 * sum_sq.max(1.0),
                "{}: sum {sum} vs {want}",
                t.name
            );
            assert!(
                (sum_sq - r["sum_sq"].as_f64().unwrap()).abs() <= 1e-6 * sum_sq.max(1.0),
                "{}",
                t.name
            );
        }
        eprintln!(
            "{file}: {} tensors, worst sampled |error| vs gguf-py {worst:.1e}",
            gguf.tensors.len()
        );
        assert!(worst <= 1e-6, "{file}: worst sampled error {worst}");
    }
}

/// Token ids of 254 probe strings against llama.cpp's tokenisation (fixtures/llamacpp-reference).
#[test]
fn gguf_tokenizers_match_llama_cpp_on_every_probe() {
    for (file, reference) in [
        (
            SMOLLM2_135M,
            "llamacpp-reference/smollm2-135m-tokenize.json",
        ),
        (
            QWEN_CODER_05B,
            "llamacpp-reference/qwen2.5-coder-0.5b-tokenize.json",
        ),
        (GEMMA3_270M, "llamacpp-reference/gemma3-270m-tokenize.json"),
    ] {
        let tok = Model::open(model_path(file)).unwrap().tokenizer().unwrap();
        let probes = fixture(reference)["probes"].as_array().unwrap().clone();
        assert!(probes.len() >= 200);
        let mismatches: Vec<String> = probes
            .iter()
            .filter_map(|p| {
                let text = p["text"].as_str().unwrap();
                let want: Vec<u32> = p["ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as u32)
                    .collect();
                let got = tok.encode(text).unwrap();
                (got != want).then(|| format!("{text:?}: got {got:?}, want {want:?}"))
            })
            .collect();
        assert!(
            mismatches.is_empty(),
            "{file}: {} of {} differ:\n{}",
            mismatches.len(),
            probes.len(),
            mismatches.join("\n")
        );
    }
}

#[test]
fn description_reads_headers_only() {
    let started = std::time::Instant::now();
    let model = Model::open(model_path(SMOLLM2_135M)).unwrap();
    let d = model.description();
    eprintln!(
        "open + describe SmolLM2: {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(d.config.num_hidden_layers, 30);
    assert_eq!(d.config.hidden_size, 576);
    assert_eq!(
        (d.config.num_attention_heads, d.config.num_key_value_heads),
        (9, 3)
    );
    assert_eq!(d.config.vocab_size, 49152);
    assert!(d.config.tie_word_embeddings);
    assert_eq!(d.parameter_count, 134_515_008);
    assert_eq!(d.head_parameters, 0);
    assert_eq!(d.layer_parameters.len(), 30);
    assert_eq!(d.dtypes["Q4_1"], 210);

    let qwen = Model::open(model_path(QWEN_CODER_05B))
        .unwrap()
        .description();
    assert!(!qwen.config.tie_word_embeddings);
    assert_eq!(qwen.config.vocab_size, 151_936);
    assert_eq!(qwen.head_parameters, 151_936 * 896);
}

/// GGUF -> safetensors directory -> read back: same weights (bit for bit in f32), same tokens.
#[test]
fn conversion_round_trips_weights_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("smollm2-f32");
    let gguf = Model::open(model_path(SMOLLM2_135M)).unwrap();
    convert::convert(&gguf, &out, convert::OutputDType::F32, |_, _| {}).unwrap();
    let hf = Model::open(&out).unwrap();
    assert_eq!(hf.config(), gguf.config());
    let names: Vec<_> = gguf.tensors().map(|t| t.name.clone()).collect();
    assert_eq!(
        names,
        hf.tensors().map(|t| t.name.clone()).collect::<Vec<_>>()
    );
    for name in &names {
        assert_eq!(
            gguf.load_f32(name).unwrap(),
            hf.load_f32(name).unwrap(),
            "{name}"
        );
    }
    let (a, b) = (gguf.tokenizer().unwrap(), hf.tokenizer().unwrap());
    assert_eq!(a.bos, b.bos);
    assert_eq!(a.vocab(), b.vocab());
    for p in fixture("llamacpp-reference/smollm2-135m-tokenize.json")["probes"]
        .as_array()
        .unwrap()
    {
        let text = p["text"].as_str().unwrap();
        assert_eq!(a.encode(text).unwrap(), b.encode(text).unwrap(), "{text:?}");
    }
    // Converting again onto an existing directory is refused, not overwritten.
    assert!(convert::convert(&gguf, &out, convert::OutputDType::F16, |_, _| {}).is_err());
}

/// GGUF v2 has the v3 layout (64-bit counts); a v2 header reads the same tensors.
#[test]
fn gguf_version_2_reads_like_version_3() {
    let mut bytes = std::fs::read(model_path(SMOLLM2_135M)).unwrap();
    assert_eq!(&bytes[4..8], &3u32.to_le_bytes());
    bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let v2 = GgufFile::open(&path).unwrap();
    let v3 = GgufFile::open(&model_path(SMOLLM2_135M)).unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(v2.tensors.len(), v3.tensors.len());
    assert_eq!(v2.bytes(&v2.tensors[5]), v3.bytes(&v3.tensors[5]));
}

/// A sharded directory (model.safetensors.index.json) and bf16 weights read back correctly.
#[test]
fn sharded_and_bf16_directories_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = Model::open(model_path(SMOLLM2_135M)).unwrap();
    let single = dir.path().join("bf16");
    convert::convert(&gguf, &single, convert::OutputDType::Bf16, |_, _| {}).unwrap();
    let bf16 = Model::open(&single).unwrap();
    let name = "model.layers.0.self_attn.q_proj.weight";
    let (want, got) = (gguf.load_f32(name).unwrap(), bf16.load_f32(name).unwrap());
    let worst = want
        .iter()
        .zip(&got)
        .map(|(a, b)| ((a - b) / a.abs().max(1e-6)).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst <= 1.0 / 128.0,
        "bf16 keeps 8 bits of mantissa: worst relative error {worst}"
    );

    // Split the single file into two shards with an index, as Hugging Face writes them.
    let sharded = dir.path().join("sharded");
    std::fs::create_dir(&sharded).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(single.join(f), sharded.join(f)).unwrap();
    }
    let names: Vec<String> = bf16.tensors().map(|t| t.name.clone()).collect();
    let mut weight_map = serde_json::Map::new();
    for (shard, part) in names.chunks(names.len() / 2 + 1).enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", shard + 1);
        let views: Vec<(String, safetensors::tensor::TensorView)> = part
            .iter()
            .map(|n| {
                let t = bf16.tensor(n).unwrap();
                let view = safetensors::tensor::TensorView::new(
                    safetensors::Dtype::BF16,
                    t.shape.clone(),
                    bf16.raw_bytes(n).unwrap(),
                )
                .unwrap();
                (n.clone(), view)
            })
            .collect();
        safetensors::serialize_to_file(views, None, &sharded.join(&file)).unwrap();
        for n in part {
            weight_map.insert(n.clone(), file.clone().into());
        }
    }
    std::fs::write(
        sharded.join("model.safetensors.index.json"),
        serde_json::json!({ "weight_map": weight_map }).to_string(),
    )
    .unwrap();
    let reread = Model::open(&sharded).unwrap();
    assert_eq!(reread.tensors().count(), names.len());
    for n in &names {
        assert_eq!(reread.raw_bytes(n), bf16.raw_bytes(n), "{n}");
    }
}
