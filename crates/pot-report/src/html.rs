//! The report as one self-contained HTML page: inline CSS and SVG, no script, nothing fetched,
//! so it opens offline and can be archived or attached as is. Every string from the report is
//! escaped (a report is untrusted input when read back with `pot report`).

use std::fmt::Write;

use serde_json::Value;

use crate::svg::Chart;

const STYLE: &str = r#"
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 980px; padding: 16px 24px; color: #1b1f24; }
h1 { font-size: 22px; margin: 8px 0; } h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #d0d7de; }
.verdict { display: inline-block; padding: 2px 12px; border-radius: 6px; color: #fff; font-weight: 700; }
.SAME { background: #1a7f37; } .DIFFERENT { background: #cf222e; } .UNDECIDED { background: #9a6700; }
pre { background: #f6f8fa; padding: 10px; overflow-x: auto; white-space: pre-wrap; }
table { border-collapse: collapse; width: 100%; margin: 6px 0; } td, th { border: 1px solid #d0d7de; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .hash { font-family: ui-monospace, monospace; font-size: 12px; word-break: break-all; }
.bar { background: #0969da; height: 8px; } .bar.over { background: #cf222e; }
.error { background: #ffebe9; border: 1px solid #cf222e; padding: 8px; }
.muted { color: #57606a; } svg { width: 100%; height: auto; }
svg .grid { stroke: #eaeef2; } svg .frame { fill: none; stroke: #8c959f; }
svg .tick, svg .note { font-size: 11px; fill: #57606a; } svg .title { font-size: 12px; fill: #1b1f24; }
svg .band { fill: #0969da; fill-opacity: 0.15; stroke: none; }
svg .bound { fill: none; stroke: #0969da; stroke-width: 1; }
svg .mean { fill: none; stroke: #0550ae; stroke-width: 2; }
svg .score { fill: #8250df; fill-opacity: 0.7; }
svg .tolerance { stroke: #cf222e; stroke-dasharray: 6 4; }
svg .clip { stroke: #9a6700; stroke-dasharray: 2 3; }
svg .stop { stroke: #1b1f24; stroke-dasharray: 4 3; }
svg .rss { fill: none; stroke: #0550ae; stroke-width: 2; }
svg .system { fill: none; stroke: #8250df; stroke-width: 2; }
svg .warning { stroke: #9a6700; stroke-dasharray: 6 4; } svg .critical { stroke: #bc4c00; stroke-dasharray: 6 4; }
svg .kill, svg .budget { stroke: #cf222e; stroke-dasharray: 6 4; }
svg .event { stroke: #8c959f; stroke-dasharray: 1 3; }
"#;

/// The page for one report.
pub fn html(r: &Value) -> String {
    // Only the three verdicts name a CSS class; anything else in a hostile report is UNDECIDED.
    let verdict = r["final_decision"]
        .as_str()
        .filter(|v| matches!(*v, "SAME" | "DIFFERENT" | "UNDECIDED"))
        .unwrap_or("UNDECIDED");
    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>pot: {verdict}</title><style>{STYLE}</style></head><body>"
    );
    let _ = write!(
        page,
        r#"<h1>pot verify <span class="verdict {verdict}">{verdict}</span></h1><p>{} <span class="muted">vs</span> {}</p>"#,
        text(&r["model1"]),
        text(&r["model2"])
    );
    if r["success"] != true {
        let _ = write!(
            page,
            r#"<p class="error"><b>The run did not complete.</b> {}{}</p>"#,
            text(&r["error"]),
            r["advice"]
                .as_str()
                .map(|a| format!("<br>What to do: {}", escape(a)))
                .unwrap_or_default()
        );
    }
    let _ = write!(page, "<pre>{}</pre>", escape(&crate::summary(r).join("\n")));
    confidence_section(&mut page, r);
    deployments_section(&mut page, r);
    challenges_section(&mut page, &r["trace"], r["enhanced_diff"]["clip"].as_f64());
    evidence_section(&mut page, r);
    memory_section(&mut page, r);
    let _ = write!(
        page,
        r#"<p class="muted">{} written by pot {}. This page is drawn from the JSON report alone (docs/REPORT.md) and needs nothing else to open.</p></body></html>"#,
        text(&r["report_version"]),
        text(&r["pot_version"])
    );
    page.push('\n');
    page
}

/// HTML-escapes text for element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A JSON value as escaped text: strings bare, null as "—", anything else as JSON.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => escape(s),
        Value::Null => "—".into(),
        other => escape(&other.to_string()),
    }
}

fn number(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map_or_else(|| "—".into(), |x| format!("{x:.digits$}"))
}

fn gb(bytes: &Value) -> String {
    bytes
        .as_f64()
        .map_or_else(|| "—".into(), |b| format!("{:.2} GB", b / 1e9))
}

fn rows(page: &mut String, rows: &[(&str, String)]) {
    page.push_str("<table>");
    for (name, value) in rows {
        let _ = write!(page, "<tr><th>{}</th><td>{value}</td></tr>", escape(name));
    }
    page.push_str("</table>");
}

/// The deployments of model 1 the candidate was tested against (`--deployment`), side by side:
/// each one's tolerance, interval, mean and own verdict, the one named first.
fn deployments_section(page: &mut String, r: &Value) {
    let Some(tested) = r["deployments"]["tested"].as_array() else {
        return;
    };
    let named = r["deployments"]["named"].as_str().unwrap_or("");
    page.push_str("<h2>Deployments of model 1</h2>");
    let _ = write!(
        page,
        "<p class=\"muted\">{}</p><table><tr><th>deployment</th><th>how it is made and computed</th><th>γ</th><th>mean score</th><th>interval</th><th>its verdict</th><th>where γ comes from</th></tr>",
        text(&r["deployments"]["rule"])
    );
    for d in tested {
        let name = d["name"].as_str().unwrap_or("");
        let mark = if name == named && !name.is_empty() {
            " <b>(named)</b>"
        } else {
            ""
        };
        let _ = write!(
            page,
            "<tr><th>{}{mark}</th><td>{}</td><td>{}</td><td>{}</td><td>[{}, {}]</td><td>{}</td><td class=\"muted\">{}</td></tr>",
            escape(name),
            text(&d["description"]),
            number(&d["gamma"], 4),
            number(&d["effect_size"], 5),
            number(&d["ci_lower"], 5),
            number(&d["ci_upper"], 5),
            d["verdict"]
                .as_str()
                .map_or_else(|| "undecided".to_string(), escape),
            text(&d["gamma_source"]),
        );
    }
    page.push_str("</table>");
}

/// The confidence sequence over queries: how the interval on the mean clipped score closed in on
/// the tolerance, and where the test stopped.
fn confidence_section(page: &mut String, r: &Value) {
    let trace = r["trace"].as_array().map(Vec::as_slice).unwrap_or_default();
    let d = &r["enhanced_diff"];
    page.push_str("<h2>Confidence sequence</h2>");
    if trace.is_empty() || !d.is_object() {
        page.push_str("<p class=\"muted\">No challenge was scored in this run.</p>");
        return;
    }
    let gamma = d["gamma"].as_f64().unwrap_or(f64::NAN);
    let clip = d["clip"].as_f64().unwrap_or(2.0 * gamma);
    let series = |key: &str| -> Vec<(f64, f64)> {
        trace
            .iter()
            .map(|t| {
                (
                    t["query"].as_f64().unwrap_or(f64::NAN),
                    t[key].as_f64().unwrap_or(f64::NAN),
                )
            })
            .collect()
    };
    let (lower, upper) = (series("ci_lower"), series("ci_upper"));
    // Reports before `mean_clipped` was traced: the running mean of the clipped scores.
    let mean: Vec<(f64, f64)> = if trace.iter().all(|t| t["mean_clipped"].is_number()) {
        series("mean_clipped")
    } else {
        let mut sum = 0.0;
        series("score")
            .into_iter()
            .enumerate()
            .map(|(i, (q, s))| {
                sum += s.min(clip);
                (q, sum / (i + 1) as f64)
            })
            .collect()
    };
    let n = trace.len() as f64;
    let cap = r["challenges"]["cap"].as_f64().unwrap_or(n).max(n);
    let top = clip.max(gamma) * 1.15;
    let mut chart = Chart::new((1.0, cap), (0.0, top), "query", "score (total variation)");
    chart.band(&lower, &upper, "band");
    chart.line(&lower, "bound");
    chart.line(&upper, "bound");
    chart.line(&mean, "mean");
    let scores: Vec<(f64, f64, String)> = trace
        .iter()
        .map(|t| {
            let s = t["score"].as_f64().unwrap_or(f64::NAN);
            (
                t["query"].as_f64().unwrap_or(f64::NAN),
                s,
                format!(
                    "query {}: challenge {} ({}) score {s:.5}",
                    t["query"],
                    t["challenge_index"],
                    t["family"].as_str().unwrap_or("?")
                ),
            )
        })
        .collect();
    chart.points(&scores, "score");
    chart.hline(gamma, "tolerance", &format!("tolerance γ = {gamma}"));
    chart.hline(clip, "clip", &format!("clip {clip}"));
    let decision = d["decision"].as_str().unwrap_or("UNDECIDED");
    chart.vline(n, "stop", &format!("stopped at query {n}: {decision}"));
    page.push_str(&chart.finish("confidence sequence over queries"));
    let _ = write!(
        page,
        "<p class=\"muted\">Dots: each query's score (triangles on the top edge: above the clip, \
         counted as {clip}). Thick line: running mean of the clipped scores; shaded: the \
         {}-confidence sequence ({}) on that mean. SAME once the upper bound is below γ, \
         DIFFERENT once the lower bound is above it; UNDECIDED when the cap of {cap} queries \
         came first.</p>",
        text(&d["confidence"]),
        text(&d["method"]),
    );
}

/// Per-challenge scores, highest first: the challenges that moved the score on top.
fn challenges_section(page: &mut String, trace: &Value, clip: Option<f64>) {
    let Some(trace) = trace.as_array().filter(|t| !t.is_empty()) else {
        return;
    };
    let mut order: Vec<&Value> = trace.iter().collect();
    order.sort_by(|a, b| {
        let s = |v: &Value| v["score"].as_f64().unwrap_or(f64::NEG_INFINITY);
        s(b).total_cmp(&s(a))
    });
    // Bars on the scale of the clip (what one query can add to the mean), or of the highest
    // score when it is above the clip.
    let top = order
        .first()
        .and_then(|t| t["score"].as_f64())
        .unwrap_or(0.0)
        .max(clip.unwrap_or(0.0));
    let top = if top > 0.0 { top } else { 1.0 };
    page.push_str(
        "<h2>Challenges</h2><p class=\"muted\">Ordered by score, highest first; a full bar is \
         the clip (or the highest score, when above it).</p><table>\
         <tr><th>query</th><th>challenge</th><th>id</th><th>family</th><th>tokens</th>\
         <th>score</th><th></th><th>top-1 agreement</th><th>cross-entropy diff (nats)</th></tr>",
    );
    for t in order {
        let score = t["score"].as_f64().unwrap_or(0.0);
        let _ = write!(
            page,
            r#"<tr><td class="num">{}</td><td class="num">{}</td><td><code>{}</code></td><td>{}</td><td class="num">{}</td><td class="num">{}</td><td style="width:120px"><div class="bar" style="width:{:.0}%"></div></td><td class="num">{}</td><td class="num">{}</td></tr>"#,
            text(&t["query"]),
            text(&t["challenge_index"]),
            text(&t["challenge_id"]),
            text(&t["family"]),
            text(&t["tokens"]),
            number(&t["score"], 5),
            (score / top * 100.0).clamp(0.0, 100.0),
            number(&t["candidate"]["top1_agreement"], 3),
            number(&t["candidate"]["cross_entropy_diff"], 5),
        );
    }
    page.push_str("</table>");
}

/// Config hashes, tokenizers, TLSH, Merkle roots and differing tensors, signing roots, the
/// transcript root and the challenge commitment.
fn evidence_section(page: &mut String, r: &Value) {
    let sec = &r["security"];
    let p = &r["provenance"];
    page.push_str("<h2>Evidence</h2>");
    let hashes = &sec["config_hash"]["hashes"];
    let config = |i: usize| {
        let h = &hashes[i];
        if h.is_object() {
            format!(
                "architecture <span class=\"hash\">{}</span><br>canonical <span class=\"hash\">{}</span> <span class=\"muted\">({})</span>",
                text(&h["architecture_sha256"]),
                text(&h["canonical_sha256"]),
                text(&h["source"])
            )
        } else {
            text(&sec["config_hash"][["model1", "model2"][i]])
        }
    };
    let differing = &p["differing_tensors"];
    let first: Vec<String> = differing["first"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|n| format!("<code>{}</code>", text(n)))
                .collect()
        })
        .unwrap_or_default();
    let fuzzy = &sec["fuzzy_hash"];
    let tokenizer = &sec["tokenizer"];
    let mut table = vec![
        (
            "config match",
            format!(
                "{} <span class=\"muted\">{}</span>",
                text(&sec["config_hash"]["match"]),
                text(&sec["config_hash"]["comparison"]["status"])
            ),
        ),
        ("config, model 1", config(0)),
        ("config, model 2", config(1)),
        (
            "tokenizer",
            format!(
                "{}{}",
                text(&tokenizer["verdict"]),
                tokenizer["detail"]
                    .as_str()
                    .map(|d| format!(": {}", escape(d)))
                    .unwrap_or_default()
            ),
        ),
        (
            "TLSH",
            format!(
                "distance {}, similarity {}, match {}",
                text(&fuzzy["distance"]),
                number(&fuzzy["similarity"], 3),
                text(&fuzzy["match"])
            ),
        ),
        (
            "tensor Merkle root, model 1",
            format!("<span class=\"hash\">{}</span>", text(&p["model1_root"])),
        ),
        (
            "tensor Merkle root, model 2",
            format!("<span class=\"hash\">{}</span>", text(&p["model2_root"])),
        ),
        ("identical weights", text(&p["identical_weights"])),
        (
            "differing tensors",
            if differing.is_object() {
                format!(
                    "{} of {}{}{}",
                    text(&differing["count"]),
                    text(&differing["total"]),
                    if first.is_empty() { "" } else { ": " },
                    first.join(", ")
                )
            } else {
                "—".into()
            },
        ),
        (
            "model-signing root, model 1",
            format!(
                "<span class=\"hash\">{}</span>",
                text(&p["model1_signing_root"])
            ),
        ),
        (
            "model-signing root, model 2",
            format!(
                "<span class=\"hash\">{}</span>",
                text(&p["model2_signing_root"])
            ),
        ),
        (
            "transcript root",
            format!(
                "<span class=\"hash\">{}</span>",
                text(&p["transcript_root"])
            ),
        ),
        (
            "challenge commitment",
            format!(
                "<span class=\"hash\">{}</span> <span class=\"muted\">run id {}, key id {}, cap {}</span>",
                text(&r["challenges"]["commitment"]),
                text(&r["challenges"]["run_id"]),
                text(&r["challenges"]["key_id"]),
                text(&r["challenges"]["cap"])
            ),
        ),
    ];
    if let Some(note) = p["note"].as_str() {
        table.push(("note", escape(note)));
    }
    if let Some(served) = r["served"].as_object() {
        let s = Value::Object(served.clone());
        table.push((
            "served model 2",
            format!(
                "{} at {} ({}, top {} log-probs); tolerance: {}",
                text(&s["model"]),
                text(&s["endpoint"]),
                text(&s["api"]),
                text(&s["top_logprobs"]),
                text(&s["tolerance_reason"])
            ),
        ));
    }
    rows(page, &table);
}

/// Memory over time: pot's RSS against the budget, system use against the thresholds, with the
/// pipeline's stage notes; then the plan each model ran under.
fn memory_section(page: &mut String, r: &Value) {
    let m = &r["memory"];
    page.push_str("<h2>Memory</h2>");
    let series = m["series"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let events = m["events"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let budget = ["model2", "model1"]
        .iter()
        .find_map(|k| m["plan"][k]["budget_bytes"].as_f64());
    if series.is_empty() {
        page.push_str("<p class=\"muted\">No memory readings in this report.</p>");
    } else {
        let end = series
            .iter()
            .chain(events)
            .filter_map(|s| s["at_s"].as_f64())
            .fold(0.0, f64::max);
        let points = |key: &str, scale: f64| -> Vec<(f64, f64)> {
            series
                .iter()
                .filter_map(|s| Some((s["at_s"].as_f64()?, s[key].as_f64()? / scale)))
                .collect()
        };
        let rss = points("rss_bytes", 1e9);
        let peak = rss.iter().map(|p| p.1).fold(0.0, f64::max);
        // A budget far above the peak (the default: all available memory) would flatten the
        // RSS curve; it is then named in the caption instead of drawn.
        let budget_gb = budget.map(|b| b / 1e9);
        let drawn_budget = budget_gb.filter(|&b| b <= 2.0 * peak || peak == 0.0);
        let top = peak.max(drawn_budget.unwrap_or(0.0)).max(0.01) * 1.15;
        let mut chart = Chart::new((0.0, end), (0.0, top), "seconds", "pot's RSS (GB)");
        mark_events(&mut chart, events);
        chart.line(&rss, "rss");
        if let Some(b) = drawn_budget {
            chart.hline(b, "budget", &format!("budget {b:.2} GB"));
        }
        page.push_str(&chart.finish("pot's resident memory over time"));
        let mut chart = Chart::new(
            (0.0, end),
            (0.0, 100.0),
            "seconds",
            "system memory used (%)",
        );
        mark_events(&mut chart, events);
        chart.line(&points("system_used_percent", 1.0), "system");
        let t = &m["thresholds"];
        for level in ["warning", "critical", "kill"] {
            if let Some(v) = t[level].as_f64() {
                chart.hline(v, level, &format!("{level} {v} %"));
            }
        }
        page.push_str(&chart.finish("system memory use over time"));
        let _ = write!(
            page,
            "<p class=\"muted\">{} readings shown of {} taken; peak RSS (VmHWM) {}; budget \
             {}{}. Dotted verticals: the pipeline's stage notes (listed below).</p>",
            series.len(),
            text(&m["samples"]),
            gb(&m["peak_rss_bytes"]),
            budget_gb.map_or_else(|| "—".into(), |b| format!("{b:.2} GB")),
            if budget_gb.is_some() && drawn_budget.is_none() {
                " (off the scale of the RSS chart)"
            } else {
                ""
            }
        );
    }
    if let Some(abort) = m["abort"].as_str() {
        let _ = write!(
            page,
            "<p class=\"error\">Stopped by the memory monitor: {}</p>",
            escape(abort)
        );
    }
    let plan = &m["plan"];
    if plan.is_object() {
        let mut table = vec![("execution", text(&plan["execution"]))];
        for (name, key) in [("model 1", "model1"), ("model 2", "model2")] {
            let p = &plan[key];
            if p.is_object() {
                let e = &p["estimate"];
                table.push((
                    name,
                    format!(
                        "{}: estimated {} (weights {}, transient {}, activations {}, log-probs {}) within a budget of {}",
                        text(&p["strategy"]["kind"]),
                        gb(&e["total_bytes"]),
                        gb(&e["weights_bytes"]),
                        gb(&e["transient_bytes"]),
                        gb(&e["activation_bytes"]),
                        gb(&e["logits_bytes"]),
                        gb(&p["budget_bytes"])
                    ),
                ));
            }
        }
        rows(page, &table);
    }
    if !events.is_empty() {
        page.push_str("<table><tr><th>s</th><th>level</th><th>event</th><th>RSS</th><th>system used</th></tr>");
        for e in events {
            let _ = write!(
                page,
                r#"<tr><td class="num">{}</td><td>{}</td><td>{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
                number(&e["at_s"], 1),
                text(&e["level"]),
                text(&e["message"]),
                gb(&e["rss_bytes"]),
                number(&e["system_used_percent"], 1) + " %"
            );
        }
        page.push_str("</table>");
    }
    if let Some(timings) = r["timings_s"].as_object().filter(|t| !t.is_empty()) {
        let table: Vec<(&str, String)> = timings
            .iter()
            .map(|(k, v)| (k.as_str(), format!("{} s", number(v, 2))))
            .collect();
        page.push_str("<h2>Timings</h2>");
        rows(page, &table);
    }
}

fn mark_events(chart: &mut Chart, events: &[Value]) {
    for e in events {
        if let Some(at) = e["at_s"].as_f64() {
            chart.vline(at, "event", "");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_hostile_report_is_escaped_everywhere() {
        let evil = "<script>alert(1)</script>\"'&";
        let r = json!({
            "final_decision": evil,
            "model1": evil,
            "model2": evil,
            "success": false,
            "error": evil,
            "reason": evil,
            "trace": [{"query": 1, "challenge_index": 0, "challenge_id": evil, "family": evil,
                       "tokens": 3, "score": 0.5, "ci_lower": 0.0, "ci_upper": 1.0,
                       "candidate": {"top1_agreement": 1.0, "cross_entropy_diff": 0.0}}],
            "enhanced_diff": {"gamma": 0.016, "clip": 0.032, "decision": evil, "method": evil},
            "memory": {"series": [{"at_s": 0.0, "rss_bytes": 1, "system_used_percent": 5.0}],
                       "events": [{"at_s": 0.0, "level": evil, "message": evil}]},
            "timings_s": {evil: 1.0},
        });
        let page = html(&r);
        assert!(!page.contains("<script"), "{page}");
        assert!(page.contains("&lt;script&gt;"));
        assert!(page.contains("class=\"verdict UNDECIDED\""));
    }

    #[test]
    fn a_failure_report_renders_its_error() {
        let r = json!({"model1": "a", "model2": "b", "success": false, "error": "cannot reach the server",
                       "final_decision": "UNDECIDED", "security": null, "enhanced_diff": null});
        let page = html(&r);
        assert!(page.contains("cannot reach the server"));
        assert!(page.contains("No challenge was scored"));
    }
}
