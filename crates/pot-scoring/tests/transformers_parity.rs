//! The forward pass against Hugging Face transformers on tiny random models, one per feature the
//! config can switch on (RoPE scalings linear / llama3 / yarn, biases, a sliding window, tied
//! head, Qwen2, Qwen3's q/k norms) and per architecture (Gemma 3, Phi-3, Mixtral). Models and reference log-probs are committed under
//! fixtures/transformers-parity/ (made by make_tiny.py there; no Python needed here).

use std::path::PathBuf;

use pot_formats::Model;
use pot_scoring::{Backend, Engine, Residency};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/transformers-parity")
}

/// Max |log-prob difference| over every position's top-20 and target, and top-1 agreement.
fn compare(name: &str, reference: &Value) -> (f64, usize, usize) {
    compare_file(&fixtures().join(name), name, reference)
}

/// [`compare`] for the model at `path` against the reference values of `name`: the worse of the
/// CPU pass's host kernels and the burn ops the other backends run (both on flex).
fn compare_file(path: &std::path::Path, name: &str, reference: &Value) -> (f64, usize, usize) {
    let model = Model::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let device = Backend::Flex.device().unwrap();
    let host = compare_engine(
        &Engine::load(&model, device.clone()).unwrap(),
        name,
        reference,
    );
    let burn_ops = Engine::with_burn_ops(&model, device, Residency::Resident).unwrap();
    let burn = compare_engine(&burn_ops, name, reference);
    eprintln!(
        "{name}: host kernels max |diff| {:.2e}, burn ops {:.2e}",
        host.0, burn.0
    );
    (host.0.max(burn.0), host.1.min(burn.1), host.2)
}

fn compare_engine(engine: &Engine, name: &str, reference: &Value) -> (f64, usize, usize) {
    let sequences: Vec<Vec<u32>> = reference["sequences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect()
        })
        .collect();
    // All sequences in one packed batch: also checks that packing matches separate runs.
    let out = engine.forward(&sequences).unwrap();
    let (mut max_diff, mut agree, mut positions) = (0.0f64, 0, 0);
    for (rows, lp) in reference["models"][name]
        .as_array()
        .unwrap()
        .iter()
        .zip(&out)
    {
        for (i, pos) in rows.as_array().unwrap().iter().enumerate() {
            let row = lp.row(i);
            let top = pos["top"].as_array().unwrap();
            let pairs = top.iter().chain(std::iter::once(&pos["target"]));
            for pair in pairs {
                let id = pair[0].as_u64().unwrap() as usize;
                let diff = (f64::from(row[id]) - pair[1].as_f64().unwrap()).abs();
                max_diff = max_diff.max(diff);
            }
            let ours = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap()
                .0;
            agree += usize::from(ours as u64 == top[0][0].as_u64().unwrap());
            positions += 1;
        }
    }
    (max_diff, agree, positions)
}

#[test]
fn every_config_feature_matches_transformers() {
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("reference.json")).unwrap())
            .unwrap();
    let names: Vec<String> = reference["models"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert!(names.len() >= 8, "reference.json lists {names:?}");
    let mut failures = Vec::new();
    for name in &names {
        let (max_diff, agree, positions) = compare(name, &reference);
        println!(
            "{name:<16} positions {positions}  top-1 {agree}/{positions}  max |diff| {max_diff:.2e}"
        );
        if max_diff > 1e-4 || agree != positions {
            failures.push(format!(
                "{name}: max diff {max_diff:.2e}, top-1 {agree}/{positions}"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The features really change the function: without the scaling (or window, or biases) the
/// same weights give other log-probs, so the parity above is not vacuous.
#[test]
fn each_feature_moves_the_log_probs() {
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("reference.json")).unwrap())
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, key) in [
        ("llama-linear", "rope_parameters"),
        ("llama-llama3", "rope_parameters"),
        ("llama-yarn", "rope_parameters"),
        ("mistral-window", "sliding_window"),
        ("gemma3", "query_pre_attn_scalar"),
        ("gemma3", "layer_types"),
        ("gemma3", "sliding_window"),
        ("mixtral", "num_experts_per_tok"),
    ] {
        let copy = dir.path().join(name);
        std::fs::create_dir_all(&copy).unwrap();
        std::fs::copy(
            fixtures().join(name).join("model.safetensors"),
            copy.join("model.safetensors"),
        )
        .unwrap();
        let mut config: Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures().join(name).join("config.json")).unwrap(),
        )
        .unwrap();
        config[key] = match key {
            "rope_parameters" => {
                serde_json::json!({"rope_type": "default", "rope_theta": config[key]["rope_theta"]})
            }
            // One expert per token instead of two.
            "num_experts_per_tok" => 1.into(),
            _ => Value::Null,
        };
        std::fs::write(copy.join("config.json"), config.to_string()).unwrap();
        let model = Model::open(&copy).unwrap();
        let engine = Engine::load(&model, Backend::Flex.device().unwrap()).unwrap();
        let seq: Vec<u32> = reference["sequences"][0]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let out = engine.forward(std::slice::from_ref(&seq)).unwrap();
        let positions = reference["models"][name][0].as_array().unwrap();
        let diff = positions
            .iter()
            .enumerate()
            .map(|(i, pos)| {
                let id = pos["target"][0].as_u64().unwrap() as usize;
                (f64::from(out[0].row(i)[id]) - pos["target"][1].as_f64().unwrap()).abs()
            })
            .fold(0.0f64, f64::max);
        println!("{name} without `{key}`: max |diff| {diff:.2e}");
        assert!(
            diff > 1e-2,
            "{name}: dropping {key} changed nothing ({diff:.2e})"
        );
    }
}

/// Qwen3Config's `head_dim` defaults to 128, not hidden / heads: a Qwen3 config.json without
/// the key is read as transformers reads it, so the tiny model (head_dim 16, hidden / heads 8)
/// is refused on its tensor shapes instead of being computed with heads of 8.
#[test]
fn a_qwen3_config_without_head_dim_is_read_as_transformers_does() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("qwen3");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::copy(
        fixtures().join("qwen3/model.safetensors"),
        copy.join("model.safetensors"),
    )
    .unwrap();
    let mut config: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("qwen3/config.json")).unwrap(),
    )
    .unwrap();
    config.as_object_mut().unwrap().remove("head_dim");
    std::fs::write(copy.join("config.json"), config.to_string()).unwrap();
    let err = Model::open(&copy).unwrap_err().to_string();
    assert!(
        err.contains("q_proj") || err.contains("q_norm"),
        "expected a shape refusal naming a query tensor, got: {err}"
    );
    assert!(err.contains("[512, 32]") || err.contains("[128]"), "{err}");
}

/// The same weights as GGUF files under llama.cpp's names, layouts and metadata
/// (`tiny_gguf.py`, gguf-py): qwen3's q/k norms, Phi-3's fused projections, GPT-2's position
/// embedding and transposed Conv1D weights. pot's GGUF path computes what transformers computes.
#[test]
fn the_gguf_copies_match_transformers() {
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("reference.json")).unwrap())
            .unwrap();
    for name in ["qwen3", "phi3", "gpt2", "mixtral"] {
        let (max_diff, agree, positions) =
            compare_file(&fixtures().join(format!("{name}.gguf")), name, &reference);
        println!(
            "{name}.gguf positions {positions}  top-1 {agree}/{positions}  max |diff| {max_diff:.2e}"
        );
        assert!(
            max_diff <= 1e-4 && agree == positions,
            "{name}: {max_diff:.2e}, {agree}/{positions}"
        );
    }
}

/// Each architecture's own weights (q/k norms, Gemma's sandwich norms, Phi-3's fused
/// projections, Mixtral's experts read on demand) travel through every residency: streamed
/// equals resident, int8 stays within its usual noise.
#[test]
fn every_architecture_runs_streamed_and_int8() {
    for name in ["qwen3", "gemma3", "phi3", "mixtral", "gpt2"] {
        residencies_agree(name);
    }
}

fn residencies_agree(name: &str) {
    use pot_scoring::Residency;
    let model = Model::open(fixtures().join(name)).unwrap();
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("reference.json")).unwrap())
            .unwrap();
    let seq: Vec<u32> = reference["sequences"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let run = |residency| {
        Engine::with_residency(&model, Backend::Flex.device().unwrap(), residency)
            .unwrap()
            .forward(std::slice::from_ref(&seq))
            .unwrap()
    };
    let resident = run(Residency::Resident);
    let diff = |other: &[pot_scoring::SequenceLogProbs]| {
        resident[0]
            .values()
            .iter()
            .zip(other[0].values())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max)
    };
    let streamed = diff(&run(Residency::Streamed { layers_at_once: 1 }));
    // Int8: per position, the largest |difference| over the vocabulary.
    let int8 = run(Residency::Int8);
    let vocab = resident[0].vocab;
    let mut per_position: Vec<f32> = (0..resident[0].len)
        .map(|i| {
            let row = i * vocab..(i + 1) * vocab;
            resident[0].values()[row.clone()]
                .iter()
                .zip(&int8[0].values()[row])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max)
        })
        .collect();
    per_position.sort_by(f32::total_cmp);
    let (median, max) = (
        per_position[per_position.len() / 2],
        per_position[per_position.len() - 1],
    );
    println!("{name} streamed {streamed:e}, int8 median {median:.3} max {max:.3}");
    assert!(streamed <= 1e-5, "{name}: {streamed}");
    // Rounding noise, well under the 1.7-6.5 a missing feature moves these models by. A
    // mixture's worst position may be larger: where two experts' router scores nearly tie,
    // int8 rounding of the hidden state can pick the other one (a jump, not noise).
    assert!(median > 0.0 && median < 0.3, "{name}: median {median}");
    if name != "mixtral" {
        assert!(max < 1.0, "{name}: max {max}");
    }
}

/// The original GPT-2 checkpoints name tensors without GPT2LMHeadModel's `transformer.` prefix
/// and carry causal-mask buffers (`h.N.attn.bias`): such a file reads as the same model.
#[test]
fn a_gpt2_checkpoint_without_the_transformer_prefix_reads_the_same() {
    use pot_formats::convert::{OutputDType, write_safetensors};
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("reference.json")).unwrap())
            .unwrap();
    let model = Model::open(fixtures().join("gpt2")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("gpt2-original-names");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::copy(
        fixtures().join("gpt2/config.json"),
        copy.join("config.json"),
    )
    .unwrap();
    let mut tensors: Vec<(String, Vec<usize>)> = model
        .tensors()
        .map(|t| {
            (
                t.name.trim_start_matches("transformer.").to_string(),
                t.shape.clone(),
            )
        })
        .collect();
    tensors.push(("h.0.attn.bias".into(), vec![1, 1, 4, 4]));
    write_safetensors(
        &copy.join("model.safetensors"),
        OutputDType::F32,
        &tensors,
        "test",
        |i, name| {
            if name == "h.0.attn.bias" {
                return Ok(vec![1.0; 16]);
            }
            model.load_f32(&format!("transformer.{}", tensors[i].0))
        },
    )
    .unwrap();
    let (max_diff, agree, positions) = compare_file(&copy, "gpt2", &reference);
    assert!(
        max_diff <= 1e-4 && agree == positions,
        "{max_diff:.2e}, {agree}/{positions}"
    );
}
