//! How far below the full score the served score sits, measured where the truth is known (two
//! local models): per challenge, the mean over scored positions of the full TVD, of the
//! fingerprint score (reference top-512 + rest against the full candidate) and of the served
//! score (`coarse_tvd_known`: the reference's top-512 against only the candidate's top-k plus
//! its next-token log-prob, k = 5, 10, 20, as an engine reports them).
//!
//! `cargo build --workspace --examples` (the workspace's feature set, so burn is not rebuilt), then
//! `$CARGO_TARGET_DIR/debug/examples/served_score_gap REF CANDIDATE [CHALLENGES]`
//! prints one Markdown table row (the numbers in docs/SCORING.md).

use pot_challenge_kdf::{ChallengeSpec, MasterKey, generate};
use pot_formats::Model;
use pot_scoring::score::{coarse_tvd, coarse_tvd_known, full_tvd, summarise_position};
use pot_scoring::{Backend, DEFAULT_PREFIX, DEFAULT_TOP_K, Engine};

const KS: [usize; 3] = [5, 10, 20];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (a, b) = (
        Model::open(&args[0]).expect("reference"),
        Model::open(&args[1]).expect("candidate"),
    );
    let n: u64 = args.get(2).map_or(16, |s| s.parse().expect("challenges"));
    let tok = a.tokenizer().expect("tokenizer");
    let device = Backend::Flex.device().expect("device");
    let (ea, eb) = (
        Engine::load(&a, device.clone()).expect("load reference"),
        Engine::load(&b, device).expect("load candidate"),
    );
    let challenges = generate(
        &MasterKey::from_bytes([7; 32]),
        &ChallengeSpec::new("gap", n),
    );
    // Per challenge means, then averaged over challenges (the test's unit).
    let (mut full, mut fp, mut served) = (Vec::new(), Vec::new(), vec![Vec::new(); KS.len()]);
    for c in &challenges {
        let ids = tok.encode_prompt(&c.prompt).expect("encode");
        let (ra, rb) = (
            &ea.forward(std::slice::from_ref(&ids)).expect("forward")[0],
            &eb.forward(std::slice::from_ref(&ids)).expect("forward")[0],
        );
        let (mut f, mut g, mut s) = (0.0, 0.0, [0.0; KS.len()]);
        let positions = DEFAULT_PREFIX..ids.len() - 1;
        let count = positions.len() as f64;
        for i in positions {
            let (p, q) = (ra.row(i), rb.row(i));
            let reference = summarise_position(p, DEFAULT_TOP_K, ids[i + 1]);
            f += full_tvd(p, q);
            g += coarse_tvd(&reference, q);
            let mut order: Vec<u32> = (0..q.len() as u32).collect();
            order.sort_by(|x, y| q[*y as usize].total_cmp(&q[*x as usize]));
            for (j, &k) in KS.iter().enumerate() {
                let mut known: Vec<(u32, f32)> =
                    order[..k].iter().map(|&t| (t, q[t as usize])).collect();
                let next = ids[i + 1];
                if !known.iter().any(|(t, _)| *t == next) {
                    known.push((next, q[next as usize]));
                }
                s[j] += coarse_tvd_known(&reference, &known).0;
            }
        }
        full.push(f / count);
        fp.push(g / count);
        for j in 0..KS.len() {
            served[j].push(s[j] / count);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let min_ratio = |v: &[f64]| {
        v.iter()
            .zip(&full)
            .filter(|(_, f)| **f > 0.0)
            .map(|(x, f)| x / f)
            .fold(f64::INFINITY, f64::min)
    };
    print!(
        "| {} | {} | {n} | {:.5} | {:.5} |",
        args[0],
        args[1],
        mean(&full),
        mean(&fp)
    );
    for v in &served {
        print!(
            " {:.5} ({:.0} %, min {:.0} %) |",
            mean(v),
            100.0 * mean(v) / mean(&full),
            100.0 * min_ratio(v)
        );
    }
    println!();
}
