//! Scores and fingerprints on the real fixture models.

use pot_challenge_kdf::{ChallengeSpec, MasterKey, generate};
use pot_formats::Model;
use pot_formats::fixtures::{QWEN_CODER_05B, QWEN_CODER_15B, SMOLLM2_135M, model_path};
use pot_scoring::score::summarise_position;
use pot_scoring::{
    Backend, Engine, Fingerprint, FingerprintHeader, FingerprintOptions, ScoringError,
    check_same_vocabulary, coarse_tvd, fingerprint, full_tvd, score_candidate,
};

fn key() -> MasterKey {
    MasterKey::from_hex(&"42".repeat(32), "test").unwrap()
}

fn header() -> FingerprintHeader {
    FingerprintHeader {
        model: "test".into(),
        config_sha256: String::new(),
        vocab_sha256: String::new(),
        merkle_root: None,
        run_id: "scores".into(),
        key_id: key().id().0,
        commitment: String::new(),
        top_k: 0,
        prefix: 0,
    }
}

#[test]
fn prompts_are_40_to_150_tokens_for_the_fixture_tokenizers() {
    let challenges = generate(&key(), &ChallengeSpec::new("lengths", 300));
    for file in [SMOLLM2_135M, QWEN_CODER_05B] {
        let tok = Model::open(model_path(file)).unwrap().tokenizer().unwrap();
        let lengths: Vec<usize> = challenges
            .iter()
            .map(|c| tok.encode(&c.prompt).unwrap().len())
            .collect();
        let (min, max) = (lengths.iter().min().unwrap(), lengths.iter().max().unwrap());
        eprintln!("{file}: prompt tokens {min}..={max}");
        assert!(*min >= 40 && *max <= 150, "{file}: {min}..={max}");
    }
}

/// A model scored against its own fingerprint scores (numerically) zero; the fingerprint file
/// round-trips exactly and detects corruption.
#[test]
fn self_score_is_zero_and_fingerprint_files_round_trip() {
    let model = Model::open(model_path(SMOLLM2_135M)).unwrap();
    let tok = model.tokenizer().unwrap();
    let engine = Engine::load(&model, Backend::Flex.device().unwrap()).unwrap();
    let challenges = generate(&key(), &ChallengeSpec::new("scores", 6));
    let fp = fingerprint(
        &engine,
        &tok,
        &challenges,
        header(),
        &FingerprintOptions::default(),
        |_, _| {},
    )
    .unwrap();
    assert_eq!(fp.records.len(), 6);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fp.potfp");
    fp.save(&path, &key()).unwrap();
    assert_eq!(Fingerprint::load(&path, &key()).unwrap(), fp);
    fp.validate(model.config().vocab_size, "fp").unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let refused = |bytes: &[u8], key: &MasterKey| {
        Fingerprint::from_bytes(bytes, "fp", key)
            .unwrap_err()
            .to_string()
    };
    // One flipped bit anywhere in the body: the tag no longer verifies.
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 1;
    assert!(refused(&flipped, &key()).contains("edited after it was signed"));
    // Another key: named as such, with both key ids.
    let other = MasterKey::from_hex(&"17".repeat(32), "test").unwrap();
    let err = refused(&bytes, &other);
    assert!(
        err.contains(&key().id().0) && err.contains(&other.id().0),
        "{err}"
    );
    // An edited log-prob re-signed with a plain SHA-256 (the old trailer) does not pass.
    let mut forged = bytes[..bytes.len() - 32].to_vec();
    let at = forged.len() - 4;
    forged[at..].copy_from_slice(&(-0.5f32).to_le_bytes());
    let digest = <sha2::Sha256 as sha2::Digest>::digest(&forged);
    forged.extend_from_slice(&digest);
    assert!(refused(&forged, &key()).contains("edited after it was signed"));
    // Records that pass the MAC (a buggy or malicious writer holding the key) are still checked.
    let mut zero = fp.clone();
    zero.records[0].positions.clear();
    assert!(refused(&zero.to_bytes(&key()), &key()).contains("no scored position"));
    let mut out_of_range = fp.clone();
    out_of_range.records[1].positions[0].top[0].0 = model.config().vocab_size as u32;
    let err = Fingerprint::from_bytes(&out_of_range.to_bytes(&key()), "fp", &key())
        .unwrap()
        .validate(model.config().vocab_size, "fp")
        .unwrap_err()
        .to_string();
    assert!(err.contains("outside the vocabulary"), "{err}");
    let mut no_top = fp.clone();
    no_top.header.top_k = 0;
    assert!(refused(&no_top.to_bytes(&key()), &key()).contains("top_k 0"));

    for s in score_candidate(&engine, &fp.records).unwrap() {
        assert!(s.score < 1e-6, "self score {}", s.score);
        assert_eq!(s.top1_agreement, 1.0);
        assert!(s.cross_entropy_diff.abs() < 1e-6);
    }
}

/// How far the fingerprint score (coarse-grained TVD) sits below the full TVD, per challenge, on a
/// really different pair (Qwen2.5-Coder 0.5B vs 1.5B, same tokenizer).
#[test]
fn fingerprint_score_approaches_full_tvd_as_k_grows() {
    let small = Model::open(model_path(QWEN_CODER_05B)).unwrap();
    let large = Model::open(model_path(QWEN_CODER_15B)).unwrap();
    let tok = small.tokenizer().unwrap();
    check_same_vocabulary(&tok, &large.tokenizer().unwrap()).unwrap();
    let challenges = generate(&key(), &ChallengeSpec::new("topk", 3));
    let ids: Vec<Vec<u32>> = challenges
        .iter()
        .map(|c| tok.encode_prompt(&c.prompt).unwrap())
        .collect();
    let a = Engine::load(&small, Backend::Flex.device().unwrap())
        .unwrap()
        .forward(&ids)
        .unwrap();
    let b = Engine::load(&large, Backend::Flex.device().unwrap())
        .unwrap()
        .forward(&ids)
        .unwrap();
    // Per-challenge score (mean over positions) from the fingerprint vs from full distributions.
    let mut report = Vec::new();
    let mut previous = f64::INFINITY;
    let mut default_gap = 0.0f64;
    let mut default_clipped_gap = 0.0f64;
    // The sequential test clips scores at 2γ (0.032 under pot-stats' default tolerance, 0.144
    // under `quantized`): the larger clip is the stricter check here.
    let clip = |x: f64| x.min(0.144);
    for k in [32usize, 128, 512, 2048] {
        let mut worst_challenge_gap = 0.0f64;
        let mut worst_clipped_gap = 0.0f64;
        let (mut rest_sum, mut positions) = (0.0f64, 0usize);
        for ((la, lb), ids) in a.iter().zip(&b).zip(&ids) {
            let (mut full, mut coarse) = (0.0, 0.0);
            for i in 0..ids.len() - 1 {
                let f = full_tvd(la.row(i), lb.row(i));
                let record = summarise_position(la.row(i), k, ids[i + 1]);
                let c = coarse_tvd(&record, lb.row(i));
                assert!(c <= f + 1e-6, "coarse-graining cannot increase TVD");
                // The gap is at most the smaller of the two remaining masses (docs/SCORING.md);
                // the reference's is stored in the fingerprint, so every score carries a bound.
                let rest_p = f64::from(record.log_rest).exp();
                let kept_q: f64 = record
                    .top
                    .iter()
                    .map(|&(id, _)| f64::from(lb.row(i)[id as usize]).exp())
                    .sum();
                let rest_q = (1.0 - kept_q).max(0.0);
                assert!(
                    f - c <= rest_p.min(rest_q) + 1e-5,
                    "gap {} above the remaining-mass bound {}",
                    f - c,
                    rest_p.min(rest_q)
                );
                rest_sum += rest_p;
                positions += 1;
                full += f;
                coarse += c;
            }
            let n = (ids.len() - 1) as f64;
            worst_challenge_gap = worst_challenge_gap.max((full - coarse) / n);
            worst_clipped_gap = worst_clipped_gap.max(clip(full / n) - clip(coarse / n));
        }
        report.push(format!(
            "k={k}: worst per-challenge gap {worst_challenge_gap:.2e}, mean reference remaining mass {:.2e}",
            rest_sum / positions as f64
        ));
        assert!(
            worst_challenge_gap <= previous + 1e-12,
            "a larger k cannot lose information"
        );
        previous = worst_challenge_gap;
        if k == pot_scoring::DEFAULT_TOP_K {
            default_gap = worst_challenge_gap;
            default_clipped_gap = worst_clipped_gap;
        }
    }
    eprintln!("{}", report.join("; "));
    // Measured (docs/SCORING.md): k=32 3.3e-2, 128 2.0e-2, 512 1.3e-2, 2048 7.6e-3 on this far
    // pair (full TVD ~0.28): a one-cell remainder does not reach 1e-3 here. The score the test
    // uses is clipped at 2γ <= 0.144, and there the fingerprint and full scores agree (both clipped).
    // Near pairs, where clipping does not hide the gap, are checked in tests/residency.rs.
    assert!(
        default_gap <= 0.02,
        "default top-k gap {default_gap}: {}",
        report.join("; ")
    );
    assert!(
        default_clipped_gap <= 1e-3,
        "clipped score gap {default_clipped_gap}"
    );
}

#[test]
fn different_vocabularies_are_refused_with_the_first_differences() {
    let a = Model::open(model_path(SMOLLM2_135M))
        .unwrap()
        .tokenizer()
        .unwrap();
    let b = Model::open(model_path(QWEN_CODER_05B))
        .unwrap()
        .tokenizer()
        .unwrap();
    let err = check_same_vocabulary(&a, &b).unwrap_err();
    assert!(matches!(err, ScoringError::VocabularyMismatch(_)));
    let text = err.to_string();
    assert!(text.contains("49152 tokens vs"), "{text}");
    assert!(text.contains("id 0:"), "{text}");
}
