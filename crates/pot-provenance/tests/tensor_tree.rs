//! Tensor Merkle trees on the real fixtures.

use pot_formats::convert::{OutputDType, convert};
use pot_formats::fixtures::{SMOLLM2_135M, model_path};
use pot_formats::{Model, gguf::GgufFile};
use pot_provenance::{TensorEncoding, TensorTree};

#[test]
fn roots_are_stable_and_every_proof_verifies() {
    let model = Model::open(model_path(SMOLLM2_135M)).unwrap();
    let a = TensorTree::of_model(&model, TensorEncoding::Stored).unwrap();
    let b = TensorTree::of_model(
        &Model::open(model_path(SMOLLM2_135M)).unwrap(),
        TensorEncoding::Stored,
    )
    .unwrap();
    assert_eq!(a.root(), b.root());
    assert_eq!(a.leaves.len(), 272);
    for leaf in &a.leaves {
        let proof = a.proof(&leaf.name).unwrap();
        assert!(proof.verify(None), "{}", leaf.name);
        assert!(proof.verify(Some(&a.root())));
        let mut bad = proof.clone();
        bad.leaf.bytes_sha256 = "00".repeat(32);
        assert!(!bad.verify(None));
        assert!(!proof.verify(Some(&"11".repeat(32))));
    }
    assert!(a.proof("no.such.tensor").is_none());
}

#[test]
fn tampering_one_byte_changes_exactly_that_leaf() {
    let original = std::fs::read(model_path(SMOLLM2_135M)).unwrap();
    let gguf = GgufFile::open(&model_path(SMOLLM2_135M)).unwrap();
    let target = gguf.tensor("blk.7.ffn_up.weight").unwrap();
    let mut tampered = original.clone();
    tampered[target.start + 100] ^= 0x01;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tampered.gguf");
    std::fs::write(&path, &tampered).unwrap();

    let a = TensorTree::of_model(
        &Model::open(model_path(SMOLLM2_135M)).unwrap(),
        TensorEncoding::Stored,
    )
    .unwrap();
    let b = TensorTree::of_model(&Model::open(&path).unwrap(), TensorEncoding::Stored).unwrap();
    let diff = a.diff(&b);
    assert_eq!(
        diff.changed,
        vec!["model.layers.7.mlp.up_proj.weight".to_string()]
    );
    assert!(diff.only_in_first.is_empty() && diff.only_in_second.is_empty());
    assert!(!diff.same_root);
}

/// Two encodings of the same weights: different stored roots, one canonical root.
#[test]
fn gguf_and_its_f32_conversion_share_the_canonical_root() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f32");
    let gguf = Model::open(model_path(SMOLLM2_135M)).unwrap();
    convert(&gguf, &out, OutputDType::F32, |_, _| {}).unwrap();
    let hf = Model::open(&out).unwrap();
    let stored = TensorTree::of_model(&gguf, TensorEncoding::Stored).unwrap();
    let stored_hf = TensorTree::of_model(&hf, TensorEncoding::Stored).unwrap();
    assert_ne!(stored.root(), stored_hf.root());
    let canonical = TensorTree::of_model(&gguf, TensorEncoding::Canonical).unwrap();
    let canonical_hf = TensorTree::of_model(&hf, TensorEncoding::Canonical).unwrap();
    assert_eq!(canonical.root(), canonical_hf.root());
    // An F32 file's canonical tree is its stored tree (the bytes are the f32 values).
    assert_eq!(canonical_hf.root(), stored_hf.root());
}
