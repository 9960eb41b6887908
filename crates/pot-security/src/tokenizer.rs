//! Tokenizer compatibility: full vocabulary map, overlap, special tokens, normaliser and
//! pre-tokeniser configuration, and a probe set encoded by both.

use std::collections::HashSet;

use pot_formats::Tokenizer;

/// Probe strings: prose, unicode, code, numbers, whitespace runs.
pub const PROBES: &[&str] = &[
    "The quick brown fox jumps over the lazy dog.",
    "naïve café résumé — Ünïcödé ßtraße",
    "日本語のテキストと中文分词测试",
    "emoji 🙂🚀 and symbols ∑∫√",
    "fn main() {\n    println!(\"{}\", 1 + 2);\n}",
    "def f(x):\n\treturn x ** 2  # square",
    "SELECT name, COUNT(*) FROM t GROUP BY name;",
    "3.14159 2026-11-26 1,000,000 0xDEADBEEF 1e-9",
    "   leading and trailing spaces   ",
    "tabs\tand\nnewlines\n\n\nand  double  spaces",
    "<html><body><p>Hi</p></body></html>",
    "I'm sure you'll see they've done it, haven't they?",
    "Le marché du village ouvre chaque samedi matin.",
    "Der Zug nach Berlin hatte zwanzig Minuten Verspätung.",
    "https://example.com/path?query=value&x=1#frag",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenizerVerdict {
    /// Same token -> id map, same pipeline configuration, same ids on every probe.
    Identical,
    /// Same token -> id map and same ids on every probe, but the configuration differs (for
    /// example a normaliser that the probes do not exercise): scores are comparable.
    Compatible,
    /// Different maps or different ids: the models cannot be compared token by token.
    Incompatible,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TokenizerReport {
    pub verdict: TokenizerVerdict,
    pub reasons: Vec<String>,
    pub vocab_sha256: (String, String),
    pub vocab_sizes: (usize, usize),
    /// |A ∩ B| / |A ∪ B| over token strings.
    pub jaccard: f64,
    pub same_pipeline: bool,
    pub probes: usize,
    pub probes_identical: usize,
    /// The first probe encoded differently, with both id lists.
    pub first_probe_difference: Option<(String, Vec<u32>, Vec<u32>)>,
}

pub fn compare_tokenizers(a: &Tokenizer, b: &Tokenizer) -> TokenizerReport {
    let (va, vb) = (a.vocab(), b.vocab());
    let keys_a: HashSet<&String> = va.keys().collect();
    let keys_b: HashSet<&String> = vb.keys().collect();
    let union = keys_a.union(&keys_b).count().max(1);
    let jaccard = keys_a.intersection(&keys_b).count() as f64 / union as f64;
    let same_map = va == vb;
    let same_pipeline = a.pipeline_json() == b.pipeline_json() && a.bos == b.bos;
    let mut identical = 0;
    let mut first = None;
    for probe in PROBES {
        // A probe either tokenizer fails to encode never counts as identical.
        let (ia, ib) = (a.encode(probe).ok(), b.encode(probe).ok());
        if ia.is_some() && ia == ib {
            identical += 1;
        } else if first.is_none() {
            first = Some((
                probe.to_string(),
                ia.unwrap_or_default(),
                ib.unwrap_or_default(),
            ));
        }
    }
    let mut reasons = Vec::new();
    if !same_map {
        reasons.push(format!(
            "token -> id maps differ ({} vs {} tokens, Jaccard overlap {:.3})",
            va.len(),
            vb.len(),
            jaccard
        ));
    }
    if identical < PROBES.len() {
        reasons.push(format!(
            "{} of {} probes encode differently",
            PROBES.len() - identical,
            PROBES.len()
        ));
    }
    if !same_pipeline {
        reasons.push("normaliser, pre-tokeniser or BOS policy differ".into());
    }
    let verdict = if !same_map || identical < PROBES.len() {
        TokenizerVerdict::Incompatible
    } else if !same_pipeline {
        TokenizerVerdict::Compatible
    } else {
        TokenizerVerdict::Identical
    };
    TokenizerReport {
        verdict,
        reasons,
        vocab_sha256: (a.vocab_sha256(), b.vocab_sha256()),
        vocab_sizes: (va.len(), vb.len()),
        jaccard,
        same_pipeline,
        probes: PROBES.len(),
        probes_identical: identical,
        first_probe_difference: first,
    }
}
