//! The JSON report of `pot verify` (schema in docs/REPORT.md).

use std::time::Instant;

use pot_challenge_kdf::Commitment;
use pot_scoring::{ChallengeRecord, ChallengeScore};
use pot_security::TokenizerReport;
use sha2::{Digest, Sha256};

use crate::WeightEvidence;
use pot_stats::{Outcome, Verdict};
use serde_json::{Value, json};

use pot_memory_governor::{MonitorReport, Plan, ProcessMemory};

use crate::{VerifyOptions, final_decision};

pub const REPORT_VERSION: &str = "pot-report/v1";

/// The report under construction; [`Report::json`] is what gets written.
/// Differing tensor names listed in the report (the count is always complete).
const DIFFERING_SHOWN: usize = 10;

pub struct Report {
    value: Value,
    tokenizers_compatible: bool,
    identical_weights: bool,
    statistical: Option<Outcome>,
    aborted: bool,
}

impl Report {
    pub(crate) fn new(opts: &VerifyOptions) -> Self {
        let mut value = json!({
            "report_version": REPORT_VERSION,
            "pot_version": env!("CARGO_PKG_VERSION"),
            "model1": opts.reference.as_ref().map_or_else(
                || opts.model1.display().to_string(),
                |r| format!("fingerprint:{}", r.display())
            ),
            "model2": opts.model2.display().to_string(),
            "mode": opts.mode,
            "tolerance_reason": opts.tolerance_reason,
            "method": opts.method,
            "backend": opts.backend,
            "arithmetic": {
                "model1": opts.arithmetic[0].describe(),
                "model2": opts.arithmetic[1].describe(),
            },
            "success": false,
            "error": null,
            "final_decision": "UNDECIDED",
            "reason": null,
            "enhanced_diff": null,
            "challenges": null,
            "security": {
                "config_hash": { "model1": null, "model2": null, "match": null },
                "fuzzy_hash": { "similarity": null, "match": null, "distance": null },
                "tokenizer": { "model1_vocab_sha256": null, "model2_vocab_sha256": null, "verdict": null, "detail": null },
            },
            "provenance": { "encoding": "stored", "model1_root": null, "model2_root": null, "model1_signing_root": null, "model2_signing_root": null, "identical_weights": null, "transcript_root": null },
            "trace": [],
            "timings_s": {},
            "memory": {
                "limits": opts.resources.limits,
                "thresholds": opts.resources.thresholds,
                "plan": null,
                "events": [],
                "series": [],
                "samples": 0,
                "peak_rss_bytes": null,
                "abort": null,
            },
            "peak_memory_gb": null,
            "served": null,
            "deployments": null,
        });
        // Only when a model came from the Hugging Face cache: reports of paths are unchanged.
        if opts.sources.iter().any(Option::is_some) {
            value["sources"] = json!({ "model1": opts.sources[0], "model2": opts.sources[1] });
        }
        Self {
            value,
            tokenizers_compatible: true,
            identical_weights: false,
            statistical: None,
            aborted: false,
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

    pub(crate) fn weight_evidence(&mut self, a: &WeightEvidence, b: &WeightEvidence) {
        let cmp = a.config.compare(&b.config);
        let sec = &mut self.value["security"];
        sec["config_hash"]["hashes"] = json!([a.config, b.config]);
        sec["config_hash"]["match"] = json!(cmp.architecture_match);
        sec["config_hash"]["comparison"] = json!(cmp);
        let fuzzy = a.fuzzy.compare(&b.fuzzy);
        sec["fuzzy_hash"] = json!({
            "similarity": fuzzy.similarity,
            "match": fuzzy.is_match,
            "distance": fuzzy.distance,
            "model1": a.fuzzy.model,
            "model2": b.fuzzy.model,
            "seconds": a.fuzzy.seconds + b.fuzzy.seconds,
        });
        let p = &mut self.value["provenance"];
        p["model1_root"] = json!(a.merkle_root);
        p["model2_root"] = json!(b.merkle_root);
        signing_digests(p, Some(a), Some(b));
        self.identical_weights = a.identical_model(b);
        p["identical_weights"] = json!(self.identical_weights);
        let differing = a.differing_tensors(b);
        // Out of every tensor name either model has (the two sets differ across architectures).
        let total = a
            .leaves
            .iter()
            .chain(&b.leaves)
            .map(|l| l.name.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        p["differing_tensors"] = json!({
            "count": differing.len(),
            "total": total,
            "first": differing.iter().take(DIFFERING_SHOWN).collect::<Vec<_>>(),
        });
        if a.merkle_root == b.merkle_root && !self.identical_weights {
            p["note"] = "identical tensors but different architecture hashes: the same weights \
                         computing another function, so the verdict is the sequential test's"
                .into();
        }
    }

    /// Model 2 is served: where, which, how asked; its vocabulary is the reference tokenizer's
    /// (every challenge's tokens are checked against it before scoring).
    pub(crate) fn served(&mut self, served: &crate::ServedCandidate, vocab: &str) {
        let model = &served.model;
        self.value["served"] = json!({
            "tolerance_reason": served.tolerance_reason,
            "endpoint": model.client.base(),
            "model": model.model,
            "api": model.api.name(),
            "engine_version": model.engine_version,
            "top_logprobs": model.top_k,
            "score": "coarse total variation on the tokens whose probabilities both sides \
                      report plus one remainder cell: never above the full TVD (docs/SCORING.md)",
        });
        self.value["security"]["tokenizer"]["model2_vocab_sha256"] = vocab.into();
        self.update_matches();
    }

    /// How many alternatives the server listed and how many named no single token.
    pub(crate) fn served_alignment(&mut self, stats: &crate::served::AlignmentStats) {
        let s = &mut self.value["served"];
        s["requests"] = stats.requests.into();
        s["alternatives_listed"] = stats.listed.into();
        s["alternatives_unmapped"] = stats.unmapped.into();
    }

    /// Model 1's weight evidence when model 2's weights are out of reach (served).
    pub(crate) fn model1_evidence(&mut self, a: &WeightEvidence) {
        self.value["security"]["config_hash"]["hashes"] = json!([a.config, null]);
        self.value["provenance"]["model1_root"] = json!(a.merkle_root);
        signing_digests(&mut self.value["provenance"], Some(a), None);
        self.value["provenance"]["identical_weights"] = Value::Null;
    }

    /// With a saved fingerprint only the Merkle root its header claims for model 1 is known: it
    /// is reported, never used to decide (a header is not evidence of the weights).
    pub(crate) fn reference_evidence(&mut self, root1: Option<&str>, b: &WeightEvidence) {
        self.value["security"]["config_hash"]["hashes"] = json!([null, b.config]);
        let p = &mut self.value["provenance"];
        p["model1_root"] = json!(root1);
        p["model2_root"] = json!(b.merkle_root);
        signing_digests(p, None, Some(b));
        p["identical_weights"] = Value::Null;
    }

    pub(crate) fn tokenizer_report(&mut self, t: &TokenizerReport) {
        self.value["security"]["tokenizer"]["verdict"] = json!(t.verdict);
        self.value["security"]["tokenizer"]["report"] = json!(t);
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

    pub(crate) fn trace(
        &mut self,
        record: &ChallengeRecord,
        family: Option<&str>,
        score: &ChallengeScore,
        state: &Outcome,
    ) {
        let ids: Vec<u8> = record
            .token_ids
            .iter()
            .flat_map(|t| t.to_le_bytes())
            .collect();
        let entry = json!({
            "query": state.n,
            "challenge_index": score.index,
            "challenge_id": score.challenge_id,
            "family": family,
            "tokens": record.token_ids.len(),
            "token_ids_sha256": hex::encode(Sha256::digest(&ids)),
            "score": score.score,
            "candidate": {
                "cross_entropy_diff": score.cross_entropy_diff,
                "top1_agreement": score.top1_agreement,
                "positions": score.positions,
            },
            "mean": state.effect_size,
            "mean_clipped": state.mean_clipped,
            "ci_lower": state.ci_lower,
            "ci_upper": state.ci_upper,
        });
        self.value["trace"]
            .as_array_mut()
            .expect("trace is an array")
            .push(entry);
    }

    /// Every deployment's score on the last traced query, in the order of `deployments`.
    pub(crate) fn trace_deployment_scores(&mut self, scores: &[f64]) {
        if let Some(last) = self.value["trace"]
            .as_array_mut()
            .and_then(|t| t.last_mut())
        {
            last["deployment_scores"] = json!(scores);
        }
    }

    /// The deployments tested and where each stands: its tolerance and where that comes from,
    /// its interval (simultaneous over the deployments) and its own verdict; the one SAME named
    /// (or the closest, for any other verdict).
    pub(crate) fn deployments(
        &mut self,
        deployments: &[crate::Deployment],
        test: &pot_stats::DeploymentTest,
    ) {
        let rows: Vec<Value> = deployments
            .iter()
            .zip(test.outcomes())
            .map(|(d, (name, o))| {
                json!({
                    "name": name,
                    "description": d.describe(),
                    "arithmetic": d.arithmetic.describe(),
                    "gamma": d.gamma,
                    "gamma_source": d.gamma_source,
                    "confidence": o.confidence,
                    "verdict": o.verdict,
                    "n": o.n,
                    "effect_size": o.effect_size,
                    "mean_clipped": o.mean_clipped,
                    "ci_lower": o.ci_lower,
                    "ci_upper": o.ci_upper,
                })
            })
            .collect();
        self.value["deployments"] = json!({
            "tested": rows,
            "named": test.chosen(),
            "rule": "SAME names a deployment whose interval lies below its tolerance; DIFFERENT \
                     when every deployment's lies above; each interval at confidence 1 - alpha/m \
                     (m deployments), so all hold at once with 1 - alpha (docs/STATISTICS.md)",
        });
    }

    pub(crate) fn decide(&mut self, outcome: Outcome) {
        self.value["enhanced_diff"] = json!({
            "decision": outcome.verdict.unwrap_or(Verdict::Undecided),
            "confidence": outcome.confidence,
            "alpha": outcome.alpha,
            "gamma": outcome.gamma,
            "clip": outcome.clip,
            "tolerance": self.value["mode"]["tolerance"],
            "effect_size": outcome.effect_size,
            "mean_clipped": outcome.mean_clipped,
            "ci_lower": outcome.ci_lower,
            "ci_upper": outcome.ci_upper,
            "n_effective": outcome.n,
            "method": outcome.method,
            "diagnostic": outcome.diagnostic,
        });
        if let Some(named) = self.value["deployments"]["named"]
            .as_str()
            .map(String::from)
        {
            let tested = &self.value["deployments"]["tested"];
            let description = tested
                .as_array()
                .and_then(|t| t.iter().find(|d| d["name"] == named.as_str()))
                .map(|d| d["description"].clone());
            let verdict = outcome.verdict.unwrap_or(Verdict::Undecided);
            self.value["enhanced_diff"]["deployment"] = json!({
                "name": named,
                "description": description,
                "role": if verdict == Verdict::Same { "explains the candidate" } else { "closest" },
            });
        }
        self.statistical = Some(outcome);
    }

    pub(crate) fn timing(&mut self, name: &str, seconds: f64) {
        self.value["timings_s"][name] = seconds.into();
    }

    /// The memory plan of each model and how they were run (side by side or sequentially).
    pub(crate) fn memory_plan(
        &mut self,
        model1: Option<&Plan>,
        model2: Option<&Plan>,
        execution: &str,
    ) {
        self.value["memory"]["plan"] = json!({
            "execution": execution,
            "model1": model1,
            "model2": model2,
        });
    }

    /// The monitor cancelled the work: no verdict, `success: false`, and what to do next.
    pub(crate) fn memory_abort(&mut self, reason: &str, advice: &str) {
        self.aborted = true;
        self.statistical = None;
        self.value["error"] = format!("memory limit exceeded: {reason}").into();
        self.value["advice"] = advice.into();
        self.value["reason"] =
            "the run was stopped by pot's memory monitor before a verdict; see error and advice"
                .into();
    }

    pub(crate) fn finish(&mut self, started: Instant, memory: &MonitorReport) {
        let verdict = if self.aborted {
            Verdict::Undecided
        } else {
            final_decision(
                self.tokenizers_compatible,
                self.identical_weights,
                self.statistical.as_ref().and_then(|o| o.verdict),
            )
        };
        self.value["final_decision"] = json!(verdict);
        let trace = self.value["trace"].as_array().cloned().unwrap_or_default();
        self.value["provenance"]["transcript_root"] =
            pot_provenance::transcript::root(&trace).into();
        if self.identical_weights && self.tokenizers_compatible && !self.aborted {
            self.value["reason"] = "identical tensor Merkle roots and architecture hashes: the \
                                    same weights computing the same function (the sequential \
                                    test is reported beside)"
                .into();
        }
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
        let m = &mut self.value["memory"];
        m["events"] = json!(memory.events);
        m["series"] = json!(memory.series);
        m["samples"] = json!(memory.samples);
        m["peak_rss_bytes"] = json!(memory.peak_rss_bytes);
        m["abort"] = json!(memory.abort);
        self.value["peak_memory_gb"] = memory.peak_rss_bytes.map(|b| b as f64 / 1e9).into();
        self.timing("total", started.elapsed().as_secs_f64());
        self.value["success"] = (!self.aborted).into();
    }

    /// True when the memory monitor stopped the run.
    pub fn memory_aborted(&self) -> bool {
        self.aborted
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
            "peak_memory_gb": ProcessMemory::own().map(|m| m.peak_rss_bytes as f64 / 1e9),
        })
    }
}

/// The OpenSSF model-signing roots of the models' files (what `model_signing` signs), beside the
/// tensor roots; where one cannot be computed, why.
fn signing_digests(p: &mut Value, a: Option<&WeightEvidence>, b: Option<&WeightEvidence>) {
    let mut notes = Vec::new();
    for (key, side) in [("model1_signing_root", a), ("model2_signing_root", b)] {
        p[key] = match side.map(|s| &s.signing_root) {
            Some(Ok(root)) => json!(root),
            Some(Err(why)) => {
                notes.push(format!("{key}: {why}"));
                Value::Null
            }
            None => Value::Null,
        };
    }
    if !notes.is_empty() {
        p["signing_note"] = json!(notes.join("; "));
    }
}
