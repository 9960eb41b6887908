//! `cargo xtask simulate [STREAMS]`: the evidence tables of docs/STATISTICS.md.
//!
//! Prints, per mode and method: the minimum queries to SAME (all scores 0) and DIFFERENT (all at
//! the clip); the error rate under continuous monitoring for streams whose mean sits exactly on
//! gamma (every verdict is then an error) and inside the null; and the mean queries to a verdict
//! for simulated same and different pairs. Deterministic (fixed seeds).

use anyhow::{Context, Result};
use pot_stats::simulate::{Stream, tally, tally_deployments};
use pot_stats::{Method, Mode, queries_to_verdict};

pub fn run(args: &[String]) -> Result<()> {
    // `--deployments`: only the several-deployments table (docs/STATISTICS.md).
    let only_deployments = args.iter().any(|a| a == "--deployments");
    let args: Vec<String> = args
        .iter()
        .filter(|a| *a != "--deployments")
        .cloned()
        .collect();
    let streams: u64 = match args.first() {
        Some(n) => n.parse().context("STREAMS must be a whole number")?,
        None => 4000,
    };
    // Optional second argument: only this mode (quick, audit, extended).
    let only = args
        .get(1)
        .map(|m| Mode::by_name(m).context("unknown mode"))
        .transpose()?;
    let modes: Vec<Mode> = match &only {
        Some(m) => vec![m.clone()],
        None => Mode::all().to_vec(),
    };
    if only_deployments {
        deployments(&modes, streams);
        return Ok(());
    }
    println!("## Minimum queries in clear cases\n");
    println!(
        "| mode | confidence | gamma | clip | n_min | n_max | method | SAME (all 0) | DIFFERENT (all at clip) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for mode in &modes {
        for method in Method::ALL {
            let show = |score: f64| {
                queries_to_verdict(mode, method, score)
                    .map(|(n, v)| format!("{n} ({v})"))
                    .unwrap_or_else(|| "not reached".into())
            };
            println!(
                "| {} | {} % | {} | {} | {} | {} | {} | {} | {} |",
                mode.name,
                100.0 * mode.confidence(),
                mode.gamma,
                mode.clip,
                mode.n_min,
                mode.n_max,
                method.name(),
                show(0.0),
                show(mode.clip)
            );
        }
    }

    println!("\n## Error rate under continuous monitoring ({streams} streams each)\n");
    println!(
        "Streams in units of the clip; gamma sits at 0.5. At the boundary any verdict is an error; inside the null (mean below gamma) only DIFFERENT is.\n"
    );
    println!(
        "| mode | alpha | method | stream | wrong verdicts | rate | MC s.e. | rate <= alpha |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let null_streams = [
        (Stream::EndPoints { p: 0.5 }, true),
        (
            Stream::Uniform {
                mean: 0.5,
                half_width: 0.5,
            },
            true,
        ),
        (
            Stream::Uniform {
                mean: 0.5,
                half_width: 0.05,
            },
            true,
        ),
        (Stream::Constant { value: 0.5 }, true),
        (
            Stream::Drifting {
                low: 0.0,
                high: 0.5,
            },
            false,
        ),
        (Stream::EndPoints { p: 0.45 }, false),
    ];
    for mode in &modes {
        for method in Method::ALL {
            for (i, (stream, at_boundary)) in null_streams.iter().enumerate() {
                let t = tally(mode, method, *stream, streams, 1000 + i as u64);
                let wrong = if *at_boundary {
                    t.same + t.different
                } else {
                    t.different
                };
                let rate = wrong as f64 / streams as f64;
                let se = t.standard_error(mode.alpha);
                let verdict = judge(rate, mode.alpha, se);
                println!(
                    "| {} | {} | {} | {} | {} | {:.4} | {:.4} | {verdict} |",
                    mode.name,
                    mode.alpha,
                    method.name(),
                    stream.describe(),
                    wrong,
                    rate,
                    se,
                );
            }
        }
    }

    println!("\n## Queries to a verdict on simulated pairs ({streams} streams each)\n");
    println!("| mode | method | pair | SAME | DIFFERENT | UNDECIDED | mean queries |");
    println!("|---|---|---|---|---|---|---|");
    let pairs = [
        (
            "same: noise uniform on [0, 0.1 gamma]",
            Stream::Uniform {
                mean: 0.025,
                half_width: 0.025,
            },
        ),
        (
            "same: noise uniform on [0, 0.5 gamma]",
            Stream::Uniform {
                mean: 0.125,
                half_width: 0.125,
            },
        ),
        (
            "different: spread over [0.3, 1] of the clip",
            Stream::Uniform {
                mean: 0.65,
                half_width: 0.35,
            },
        ),
        (
            "different: 70 % of queries at the clip, rest 0",
            Stream::EndPoints { p: 0.7 },
        ),
    ];
    for mode in &modes {
        for method in Method::ALL {
            for (i, (name, stream)) in pairs.iter().enumerate() {
                let t = tally(mode, method, *stream, streams, 2000 + i as u64);
                println!(
                    "| {} | {} | {} | {} | {} | {} | {:.1} |",
                    mode.name,
                    method.name(),
                    name,
                    t.same,
                    t.different,
                    t.undecided,
                    t.mean_queries
                );
            }
        }
    }
    deployments(&modes, streams);
    Ok(())
}

/// Whether a simulated error rate keeps to alpha: at most alpha, or within two Monte Carlo
/// standard errors of it (consistent with it), or not.
fn judge(rate: f64, alpha: f64, se: f64) -> &'static str {
    if rate <= alpha {
        "yes"
    } else if rate <= alpha + 2.0 * se {
        "within 2 s.e."
    } else {
        "NO"
    }
}

/// Several deployments of the reference tested at once (`pot verify --deployment`): the
/// error rates under continuous monitoring, alpha split for SAME, intersection-union for
/// DIFFERENT (docs/STATISTICS.md, "Several deployments").
fn deployments(modes: &[Mode], streams: u64) {
    println!("\n## Several deployments ({streams} streams each, betting)\n");
    println!(
        "Four deployments with tolerances 0.002, 0.0025, 0.016 and 0.026, each tested at alpha / 4; scores in units of each deployment's clip, independent across deployments. A wrong verdict: SAME naming a deployment whose mean is not below its tolerance, or DIFFERENT while some deployment's mean is not above its tolerance.\n"
    );
    println!(
        "| mode | alpha | case | SAME (named) | DIFFERENT | UNDECIDED | wrong | rate | MC s.e. | rate <= alpha |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let gammas = [0.002, 0.0025, 0.016, 0.026];
    let at = |v: f64| Stream::EndPoints { p: v };
    let below = Stream::Uniform {
        mean: 0.1,
        half_width: 0.1,
    };
    // (case, streams, whose mean is below its tolerance, whose mean is above it)
    type Case<'a> = (&'a str, Vec<Stream>, [bool; 4], [bool; 4]);
    let cases: Vec<Case> = vec![
        (
            "every deployment exactly at its tolerance (any verdict is wrong)",
            vec![at(0.5); 4],
            [false; 4],
            [false; 4],
        ),
        (
            "deployment 3 at its tolerance, the others above (any verdict is wrong)",
            vec![at(0.8), at(0.8), at(0.8), at(0.5)],
            [false; 4],
            [true, true, true, false],
        ),
        (
            "deployment 2 explains the candidate, the others at their tolerance",
            vec![at(0.5), at(0.5), below, at(0.5)],
            [false, false, true, false],
            [false; 4],
        ),
        (
            "deployment 1 explains the candidate, the others far above",
            vec![at(0.9), below, at(0.9), at(0.9)],
            [false, true, false, false],
            [true, false, true, true],
        ),
        (
            "a different model: every deployment far above",
            vec![at(0.9); 4],
            [false; 4],
            [true; 4],
        ),
    ];
    for mode in modes {
        for (i, (name, arms, below, above)) in cases.iter().enumerate() {
            let spec: Vec<(f64, Stream)> =
                gammas.iter().copied().zip(arms.iter().copied()).collect();
            let t = tally_deployments(mode, Method::Betting, &spec, streams, 7000 + i as u64);
            let wrong_same: u64 = (0..4).filter(|&d| !below[d]).map(|d| t.same[d]).sum();
            let wrong = wrong_same
                + if above.iter().all(|&a| a) {
                    0
                } else {
                    t.different
                };
            let rate = wrong as f64 / streams as f64;
            // The Monte Carlo standard error of a rate equal to alpha, as in the table above.
            let se = (mode.alpha * (1.0 - mode.alpha) / streams as f64).sqrt();
            let ok = judge(rate, mode.alpha, se);
            println!(
                "| {} | {} | {name} | {:?} | {} | {} | {wrong} | {rate:.4} | {se:.4} | {ok} |",
                mode.name, mode.alpha, t.same, t.different, t.undecided
            );
        }
    }
}
