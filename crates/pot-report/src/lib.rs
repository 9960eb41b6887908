//! A pot report for people. Everything here reads the report's JSON (docs/REPORT.md), never the
//! pipeline's structs, so `pot verify --html` and `pot report saved.json --html` draw the same
//! page from the same bytes, and a report from another machine or version renders as far as its
//! fields allow (a missing field is shown as missing, never invented).

mod html;
mod svg;

pub use html::html;

use serde_json::Value;

/// The lines `pot verify` prints after a run: verdict, models, reason, interval, tolerance,
/// weights, evidence and cost.
pub fn summary(r: &Value) -> Vec<String> {
    let verdict = r["final_decision"].as_str().unwrap_or("UNDECIDED");
    let mut lines = vec![
        format!("{verdict}: {}", r["model1"].as_str().unwrap_or("?")),
        format!("     vs {}", r["model2"].as_str().unwrap_or("?")),
    ];
    if let Some(reason) = r["reason"].as_str() {
        lines.push(reason.to_string());
    }
    let d = &r["enhanced_diff"];
    if d.is_object() {
        lines.push(format!(
            "confidence {} | queries {} | effect size {:.5} | interval [{:.5}, {:.5}]",
            d["confidence"],
            d["n_effective"],
            d["effect_size"].as_f64().unwrap_or(f64::NAN),
            d["ci_lower"].as_f64().unwrap_or(f64::NAN),
            d["ci_upper"].as_f64().unwrap_or(f64::NAN)
        ));
        lines.push(format!(
            "tolerance {} ({}), scores clipped at {}",
            d["gamma"],
            d["tolerance"].as_str().unwrap_or("?"),
            d["clip"]
        ));
        if let Some(named) = d["deployment"].as_object() {
            let tested = r["deployments"]["tested"].as_array().map_or(0, Vec::len);
            lines.push(format!(
                "deployment {} of {tested} tested ({}): {}",
                named.get("name").and_then(Value::as_str).unwrap_or("?"),
                named.get("role").and_then(Value::as_str).unwrap_or("?"),
                named
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
            ));
        }
    }
    if let Some(line) = weights_line(&r["provenance"]) {
        lines.push(line);
    }
    lines.push(format!(
        "config hash match {} | tokenizer {} | peak memory {:.2} GB | {:.1} s",
        r["security"]["config_hash"]["match"],
        r["security"]["tokenizer"]["verdict"]
            .as_str()
            .unwrap_or("?"),
        r["peak_memory_gb"].as_f64().unwrap_or(f64::NAN),
        r["timings_s"]["total"].as_f64().unwrap_or(f64::NAN)
    ));
    lines
}

/// What the tensor Merkle trees say about the weights, in one line.
fn weights_line(p: &Value) -> Option<String> {
    let diff = &p["differing_tensors"];
    let (count, total) = (diff["count"].as_u64()?, diff["total"].as_u64()?);
    Some(if count == 0 && p["identical_weights"] == true {
        format!("weights: identical ({total} tensors, same architecture)")
    } else if count == 0 {
        "weights: identical tensors, different architecture hashes".to_string()
    } else {
        let names: Vec<&str> = diff["first"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        let more = if count as usize > names.len() {
            ", ..."
        } else {
            ""
        };
        format!(
            "weights: {count} of {total} stored tensors differ: {}{more}",
            names.join(", ")
        )
    })
}
