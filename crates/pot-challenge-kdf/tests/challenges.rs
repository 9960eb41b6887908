use std::collections::HashSet;

use pot_challenge_kdf::{
    ChallengeSpec, Family, MasterKey, challenge_seed, check_commitment, commit, generate,
};

fn fixed_key() -> MasterKey {
    MasterKey::from_hex(&"0123456789abcdef".repeat(4), "test").unwrap()
}

#[test]
fn golden_first_twenty_prompts() {
    let challenges = generate(&fixed_key(), &ChallengeSpec::new("golden-run", 20));
    insta::assert_yaml_snapshot!(challenges);
}

#[test]
fn generation_is_deterministic() {
    let spec = ChallengeSpec::new("determinism", 50);
    assert_eq!(generate(&fixed_key(), &spec), generate(&fixed_key(), &spec));
}

#[test]
fn seed_is_domain_separated_by_run_id_length() {
    // "ab" + index vs "a" + other bytes must never collide: the run id is length-prefixed.
    let key = fixed_key();
    assert_ne!(challenge_seed(&key, "ab", 0), challenge_seed(&key, "a", 0));
    assert_ne!(
        challenge_seed(&key, "run", 0),
        challenge_seed(&key, "run", 1)
    );
}

#[test]
fn every_family_appears_and_is_distinct_over_ten_thousand_prompts() {
    let key = fixed_key();
    for family in Family::ALL {
        let spec = ChallengeSpec::new("distinct", 10_000).with_families(vec![family]);
        let prompts: HashSet<String> = generate(&key, &spec)
            .into_iter()
            .inspect(|c| assert_eq!(c.family, family))
            .map(|c| c.prompt)
            .collect();
        assert_eq!(prompts.len(), 10_000, "duplicates in family {family}");
    }
}

#[test]
fn prompts_have_a_useful_length() {
    // 40-120 tokens for typical tokenizers is roughly 25-110 whitespace-separated words.
    for c in generate(&fixed_key(), &ChallengeSpec::new("length", 500)) {
        let words = c.prompt.split_whitespace().count();
        assert!(
            (25..=110).contains(&words),
            "{words} words in {:?}",
            c.prompt
        );
    }
}

#[test]
fn commitment_changes_with_every_input() {
    let key = fixed_key();
    let base = ChallengeSpec::new("commit", 16);
    let digest = commit(&key, &base).digest;
    assert!(check_commitment(&key, &base, &digest));
    assert!(check_commitment(&key, &base, &digest.to_uppercase()));

    let other_key = MasterKey::from_hex(&"f".repeat(64), "test").unwrap();
    assert_ne!(commit(&other_key, &base).digest, digest);
    assert!(!check_commitment(&other_key, &base, &digest));
    assert_ne!(
        commit(&key, &ChallengeSpec::new("commit2", 16)).digest,
        digest
    );
    assert_ne!(
        commit(&key, &ChallengeSpec::new("commit", 17)).digest,
        digest
    );
    let only_code = base.clone().with_families(vec![Family::Code]);
    assert_ne!(commit(&key, &only_code).digest, digest);
}

#[test]
fn commitment_distinguishes_counts_and_run_ids() {
    let key = fixed_key();
    for run in ["a", "run", "z9", "a-much-longer-run-id"] {
        for n in [1u64, 2, 7, 19] {
            let a = commit(&key, &ChallengeSpec::new(run, n)).digest;
            let b = commit(&key, &ChallengeSpec::new(run, n + 1)).digest;
            let c = commit(&key, &ChallengeSpec::new(format!("{run}x"), n)).digest;
            assert_ne!(a, b);
            assert_ne!(a, c);
        }
    }
}
