//! The JSON report of `pot verify` (schema in docs/REPORT.md).

use std::time::Instant;

use pot_challenge_kdf::Commitment;
use pot_scoring::ChallengeScore;
use pot_stats::{Outcome, Verdict};
use serde_json::{Value, json};

use crate::memory::MemorySnapshot;
use crate::{VerifyOptions, final_decision};

pub const REPORT_VERSION: &str = "pot-report/v1";

/// The report under construction; [`Report::json`] is what gets written.
pub struct Report {
    value: Value,
    tokenizers_compatible: bool,
    statistical: Option<Outcome>,
}

impl Report {
    pub(crate) fn new(opts: &VerifyOptions) -> Self {
        let value = json!({
            "report_version": REPORT_VERSION,
            "pot_version": env!("CARGO_PKG_VERSION"),
            "model1": opts.reference.as_ref().map_or_else(
                || opts.model1.display().to_string(),
                |r| format!("fingerprint:{}", r.display())
            ),
            "model2": opts.model2.display().to_string(),
            "mode": opts.mode,
            "method": opts.method,
            "backend": opts.backend,
            "success": false,
            "error": null,
            "final_decision": "UNDECIDED",
            "reason": null,
            "enhanced_diff": null,
            "challenges": null,
            "security": {
                "config_hash": { "model1": null, "model2": null, "match": null },
                "fuzzy_hash": {
                    "similarity": null, "match": null,
                    "status": "not computed: TLSH of the weights is not implemented yet"
                },
                "tokenizer": { "model1_vocab_sha256": null, "model2_vocab_sha256": null, "verdict": null, "detail": null },
            },
            "provenance": { "status": "not computed: Merkle trees are not implemented yet" },
            "trace": [],
            "timings_s": {},
            "memory": { "events": [] },
            "peak_memory_gb": null,
        });
        Self {
            value,
            tokenizers_compatible: true,
            statistical: None,
        }
    }

    pub(crate) fn set_challenges(&mut self, c: &Commitment) {
        self.value["challenges"] = json!({
            "run_id": c.spec.run_id,
            "cap": c.spec.count,
            "commitment": c.digest,
            "key_id": c.key_id,
            "generator": c.generator,
        });
    }

    pub(crate) fn model1_identity(&mut self, config: &str, vocab: &str) {
        self.value["security"]["config_hash"]["model1"] = config.into();
        self.value["security"]["tokenizer"]["model1_vocab_sha256"] = vocab.into();
        self.update_matches();
    }

    pub(crate) fn model2_identity(&mut self, config: &str, vocab: &str) {
        self.value["security"]["config_hash"]["model2"] = config.into();
        self.value["security"]["tokenizer"]["model2_vocab_sha256"] = vocab.into();
        self.update_matches();
    }

    fn update_matches(&mut self) {
        let sec = &mut self.value["security"];
        let (a, b) = (
            sec["config_hash"]["model1"].clone(),
            sec["config_hash"]["model2"].clone(),
        );
        if a.is_string() && b.is_string() {
            sec["config_hash"]["match"] = (a == b).into();
        }
        let (a, b) = (
            sec["tokenizer"]["model1_vocab_sha256"].clone(),
            sec["tokenizer"]["model2_vocab_sha256"].clone(),
        );
        if a.is_string() && b.is_string() {
            sec["tokenizer"]["verdict"] = if a == b { "identical" } else { "incompatible" }.into();
        }
    }

    pub(crate) fn tokenizer_mismatch(&mut self, detail: &str) {
        self.tokenizers_compatible = false;
        self.value["security"]["tokenizer"]["verdict"] = "incompatible".into();
        self.value["security"]["tokenizer"]["detail"] = detail.into();
        self.value["reason"] = format!(
            "tokenizers differ ({detail}): the models cannot be the same model, and their scores \
             would compare unrelated tokens, so no challenge was scored"
        )
        .into();
    }

    pub(crate) fn trace(&mut self, score: &ChallengeScore, state: &Outcome) {
        let entry = json!({
            "query": state.n,
            "challenge_index": score.index,
            "challenge_id": score.challenge_id,
            "score": score.score,
            "cross_entropy_diff": score.cross_entropy_diff,
            "top1_agreement": score.top1_agreement,
            "positions": score.positions,
            "ci_lower": state.ci_lower,
            "ci_upper": state.ci_upper,
        });
        self.value["trace"]
            .as_array_mut()
            .expect("trace is an array")
            .push(entry);
    }

    pub(crate) fn decide(&mut self, outcome: Outcome) {
        self.value["enhanced_diff"] = json!({
            "decision": outcome.verdict.unwrap_or(Verdict::Undecided),
            "confidence": outcome.confidence,
            "alpha": outcome.alpha,
            "gamma": outcome.gamma,
            "clip": outcome.clip,
            "effect_size": outcome.effect_size,
            "mean_clipped": outcome.mean_clipped,
            "ci_lower": outcome.ci_lower,
            "ci_upper": outcome.ci_upper,
            "n_effective": outcome.n,
            "method": outcome.method,
            "diagnostic": outcome.diagnostic,
        });
        self.statistical = Some(outcome);
    }

    pub(crate) fn timing(&mut self, name: &str, seconds: f64) {
        self.value["timings_s"][name] = seconds.into();
    }

    pub(crate) fn memory_event(&mut self, what: &str, m: MemorySnapshot) {
        let events = self.value["memory"]["events"]
            .as_array_mut()
            .expect("events array");
        events.push(
            json!({ "event": what, "rss_bytes": m.rss_bytes, "peak_rss_bytes": m.peak_rss_bytes }),
        );
    }

    pub(crate) fn finish(&mut self, started: Instant, before: MemorySnapshot) {
        let verdict = final_decision(
            self.tokenizers_compatible,
            self.statistical.as_ref().and_then(|o| o.verdict),
        );
        self.value["final_decision"] = json!(verdict);
        if self.value["reason"].is_null() {
            self.value["reason"] = match &self.statistical {
                Some(o) => format!(
                    "sequential test ({} confidence sequence) stopped after {} queries: mean score {:.5}, \
                     interval [{:.5}, {:.5}] against tolerance {}",
                    o.method.name(), o.n, o.effect_size, o.ci_lower, o.ci_upper, o.gamma
                )
                .into(),
                None => Value::Null,
            };
        }
        self.memory_event("start", before);
        let now = MemorySnapshot::now();
        self.memory_event("end", now);
        self.value["peak_memory_gb"] = now.peak_rss_bytes.map(|b| b as f64 / 1e9).into();
        self.timing("total", started.elapsed().as_secs_f64());
        self.value["success"] = true.into();
    }

    pub fn final_decision(&self) -> Verdict {
        serde_json::from_value(self.value["final_decision"].clone()).unwrap_or(Verdict::Undecided)
    }

    pub fn json(&self) -> &Value {
        &self.value
    }

    /// A report for a run that failed before producing evidence.
    pub fn failure(model1: &str, model2: &str, error: &str) -> Value {
        json!({
            "report_version": REPORT_VERSION,
            "pot_version": env!("CARGO_PKG_VERSION"),
            "model1": model1,
            "model2": model2,
            "success": false,
            "error": error,
            "final_decision": "UNDECIDED",
            "enhanced_diff": null,
            "security": null,
            "peak_memory_gb": crate::memory::peak_memory_gb(),
        })
    }
}
