//! `pot decide`: the sequential test over a file of scores, one per line.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use clap::Args;
use pot_stats::{Method, Mode, SequentialTest, Step};

use crate::exit::{self, Failure};

#[derive(Args)]
pub struct DecideArgs {
    /// File of scores, one per line (blank lines and lines starting with # are skipped).
    #[arg(long)]
    scores: PathBuf,
    /// quick (97.5 %), audit (99 %) or extended (99.9 %).
    #[arg(long, default_value = "audit", value_parser = parse_mode)]
    mode: Mode,
    /// Confidence sequence: betting (default) or empirical-bernstein.
    #[arg(long, default_value = "betting", value_parser = parse_method)]
    method: Method,
    /// Largest possible score (1 for a total variation distance).
    #[arg(long, default_value_t = 1.0)]
    score_max: f64,
    /// Override the mode's tolerance gamma (the clip becomes 2 gamma).
    #[arg(long)]
    gamma: Option<f64>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn parse_mode(name: &str) -> Result<Mode, String> {
    Mode::by_name(name)
        .ok_or_else(|| format!("unknown mode `{name}`; choose quick, audit or extended"))
}

fn parse_method(name: &str) -> Result<Method, String> {
    Method::ALL
        .into_iter()
        .find(|m| m.name() == name || (name == "eb" && *m == Method::EmpiricalBernstein))
        .ok_or_else(|| format!("unknown method `{name}`; choose betting or empirical-bernstein"))
}

/// Reads scores with their line numbers; any bad line is an error naming it (bad input, 4).
fn read_scores(path: &PathBuf) -> Result<Vec<(usize, f64)>, Failure> {
    let bad = |e: anyhow::Error| exit::fail(exit::LOAD_FAILED, e);
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {}", path.display()))
        .map_err(bad)?;
    pot_stats::parse_scores(&text).map_err(|e| {
        // `FILE:LINE: ...` for a bad line, `FILE: ...` otherwise.
        let sep = if e.starts_with(|c: char| c.is_ascii_digit()) {
            ":"
        } else {
            ": "
        };
        bad(anyhow!("{}{sep}{e}", path.display()))
    })
}

pub fn run(args: DecideArgs) -> Result<u8, Failure> {
    let mode = match args.gamma {
        Some(g) => args.mode.with_gamma(g),
        None => args.mode,
    };
    let scores = read_scores(&args.scores)?;
    let mut test = SequentialTest::new(mode, args.method, args.score_max)?;
    for (line, score) in &scores {
        let step = test.push(*score).map_err(|e| {
            exit::fail(
                exit::LOAD_FAILED,
                anyhow!("{}:{line}: {e}", args.scores.display()),
            )
        })?;
        if let Step::Stop(_) = step {
            break;
        }
    }
    let outcome = test.outcome();
    if args.json {
        let mut json = serde_json::to_value(&outcome)?;
        json["scores_in_file"] = scores.len().into();
        crate::embed::print_json(&json)?;
    } else {
        match outcome.verdict {
            Some(v) => println!("{v} at query {} of {} in the file", outcome.n, scores.len()),
            None => println!(
                "no verdict yet: the file ended after {} scores (cap {})",
                outcome.n,
                test.mode().n_max
            ),
        }
        println!(
            "mode {} ({:.1} % confidence, {} confidence sequence), gamma {}, clip {}",
            outcome.mode,
            100.0 * outcome.confidence,
            outcome.method.name(),
            outcome.gamma,
            outcome.clip
        );
        println!(
            "mean score {:.6} (clipped {:.6}), interval [{:.6}, {:.6}]",
            outcome.effect_size, outcome.mean_clipped, outcome.ci_lower, outcome.ci_upper
        );
        if let Some(d) = &outcome.diagnostic {
            println!("{}", d.position);
            if let Some(more) = d.estimated_more_queries {
                println!("about {more} more queries would likely decide");
            }
        }
    }
    Ok(exit::of_verdict(outcome.verdict))
}
