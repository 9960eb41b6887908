//! Security evidence on the real fixtures.

use pot_formats::Model;
use pot_formats::convert::{OutputDType, convert};
use pot_formats::fixtures::{QWEN_CODER_05B, SMOLLM2_135M, model_path};
use pot_security::{ConfigHashes, FuzzyHash, TokenizerVerdict, compare_tokenizers};

#[test]
fn config_hashes_match_across_encodings_on_architecture_only() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f16");
    let gguf = Model::open(model_path(SMOLLM2_135M)).unwrap();
    convert(&gguf, &out, OutputDType::F16, |_, _| {}).unwrap();
    let hf = Model::open(&out).unwrap();
    let (a, b) = (ConfigHashes::of_model(&gguf), ConfigHashes::of_model(&hf));
    assert_eq!(a.source, "gguf-metadata");
    assert_eq!(b.source, "config.json");
    assert!(a.raw_sha256.is_none() && b.raw_sha256.is_some());
    let cmp = a.compare(&b);
    assert_eq!(cmp.architecture_match, Some(true));
    assert_eq!(
        cmp.canonical_match, None,
        "different sources are not compared"
    );
    assert_eq!(cmp.raw_match, None, "absent is never a match");
    let qwen = ConfigHashes::of_model(&Model::open(model_path(QWEN_CODER_05B)).unwrap());
    assert_eq!(a.compare(&qwen).architecture_match, Some(false));
    assert_eq!(a.compare(&a).canonical_match, Some(true));
}

#[test]
fn tlsh_of_the_weights_matches_itself_and_not_another_model() {
    let smol = FuzzyHash::of_model(&Model::open(model_path(SMOLLM2_135M)).unwrap());
    let qwen = FuzzyHash::of_model(&Model::open(model_path(QWEN_CODER_05B)).unwrap());
    assert!(smol.model.is_some());
    let same = smol.compare(&smol);
    assert_eq!((same.distance, same.is_match), (Some(0), Some(true)));
    let other = smol.compare(&qwen);
    eprintln!(
        "smol {:.1} MB in {:.2} s, qwen {:.1} MB in {:.2} s; distance {:?}",
        smol.bytes_hashed as f64 / 1e6,
        smol.seconds,
        qwen.bytes_hashed as f64 / 1e6,
        qwen.seconds,
        other.distance
    );
    assert_eq!(other.is_match, Some(false));
}

#[test]
fn tokenizer_verdicts() {
    let smol = Model::open(model_path(SMOLLM2_135M))
        .unwrap()
        .tokenizer()
        .unwrap();
    let qwen = Model::open(model_path(QWEN_CODER_05B))
        .unwrap()
        .tokenizer()
        .unwrap();
    let same = compare_tokenizers(&smol, &smol);
    assert_eq!(same.verdict, TokenizerVerdict::Identical);
    assert_eq!(same.probes_identical, same.probes);
    let other = compare_tokenizers(&smol, &qwen);
    assert_eq!(other.verdict, TokenizerVerdict::Incompatible);
    assert!(other.jaccard < 0.9);
    assert!(other.first_probe_difference.is_some());
    assert!(
        other.reasons[0].contains("token -> id maps differ"),
        "{:?}",
        other.reasons
    );
}
