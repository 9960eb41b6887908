//! Monte Carlo checks of the sequential test: error rates under continuous monitoring and
//! queries to a verdict. Used by `cargo xtask simulate` and, with fewer streams, by the tests.

use crate::{Method, Mode, SequentialTest, Step, Verdict};

/// SplitMix64: a tiny deterministic generator, so simulations replay exactly on any platform.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A family of score streams, in units of the clip (values in [0, 1] before scaling).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stream {
    /// All mass at the ends: 1 with probability p, else 0 (the adversarial bounded law).
    EndPoints { p: f64 },
    /// Uniform on [mean - w, mean + w].
    Uniform { mean: f64, half_width: f64 },
    /// Mean drifts within [low, high] along the stream (sinusoid), two-point law around it.
    Drifting { low: f64, high: f64 },
    /// Constant value.
    Constant { value: f64 },
}

impl Stream {
    fn draw(&self, rng: &mut Rng, t: u64) -> f64 {
        match *self {
            Stream::EndPoints { p } => f64::from(u8::from(rng.uniform() < p)),
            Stream::Uniform { mean, half_width } => {
                (mean + half_width * (2.0 * rng.uniform() - 1.0)).clamp(0.0, 1.0)
            }
            Stream::Drifting { low, high } => {
                let p = low + (high - low) * (0.5 + 0.5 * (t as f64 / 7.0).sin());
                f64::from(u8::from(rng.uniform() < p))
            }
            Stream::Constant { value } => value,
        }
    }

    pub fn describe(&self) -> String {
        match *self {
            Stream::EndPoints { p } => format!("two-point {{0,1}}, p = {p}"),
            Stream::Uniform { mean, half_width } => format!("uniform {mean} +- {half_width}"),
            Stream::Drifting { low, high } => format!("drifting mean in [{low}, {high}]"),
            Stream::Constant { value } => format!("constant {value}"),
        }
    }
}

/// Counts of verdicts over many monitored streams.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Tally {
    pub streams: u64,
    pub same: u64,
    pub different: u64,
    pub undecided: u64,
    pub mean_queries: f64,
}

impl Tally {
    /// Monte Carlo standard error of a rate `r` estimated from `streams` runs.
    pub fn standard_error(&self, rate: f64) -> f64 {
        (rate * (1.0 - rate) / self.streams as f64).sqrt()
    }
}

/// Runs `streams` independent streams of `stream` (in clip units) through the mode's test,
/// checking after every query, and tallies the verdicts. Work is split over the available cores
/// (each share has its own seed, so results depend on the core count only through seeding).
pub fn tally(mode: &Mode, method: Method, stream: Stream, streams: u64, seed: u64) -> Tally {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let workers = workers.min(streams.max(1));
    let parts: Vec<Tally> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let share = streams / workers + u64::from(w < streams % workers);
                scope.spawn(move || tally_serial(mode, method, stream, share, seed ^ (w << 32)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("simulation thread"))
            .collect()
    });
    let total_queries: f64 = parts
        .iter()
        .map(|t| t.mean_queries * t.streams as f64)
        .sum();
    Tally {
        streams,
        same: parts.iter().map(|t| t.same).sum(),
        different: parts.iter().map(|t| t.different).sum(),
        undecided: parts.iter().map(|t| t.undecided).sum(),
        mean_queries: total_queries / streams.max(1) as f64,
    }
}

fn tally_serial(mode: &Mode, method: Method, stream: Stream, streams: u64, seed: u64) -> Tally {
    let mut rng = Rng::new(seed);
    let mut out = Tally {
        streams,
        ..Tally::default()
    };
    let mut total_queries = 0u64;
    for _ in 0..streams {
        let mut test =
            SequentialTest::new(mode.clone(), method, mode.clip).expect("preset modes are valid");
        let verdict = loop {
            let x = stream.draw(&mut rng, test.n());
            match test
                .push(x * mode.clip)
                .expect("simulated scores are in range")
            {
                Step::Continue => {}
                Step::Stop(v) => break v,
            }
        };
        total_queries += test.n();
        match verdict {
            Verdict::Same => out.same += 1,
            Verdict::Different => out.different += 1,
            Verdict::Undecided => out.undecided += 1,
        }
    }
    out.mean_queries = total_queries as f64 / streams.max(1) as f64;
    out
}

/// Verdicts of [`crate::DeploymentTest`] over many monitored streams: SAME per deployment named.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct DeploymentTally {
    pub streams: u64,
    /// SAME naming deployment `d`, per `d`.
    pub same: Vec<u64>,
    pub different: u64,
    pub undecided: u64,
    pub mean_queries: f64,
}

/// Runs `streams` candidates through a test against several deployments: deployment `d` has
/// tolerance `arms[d].0` and sees scores drawn from `arms[d].1` (in units of its clip),
/// independently per deployment (the least favourable case for a union bound is no worse).
pub fn tally_deployments(
    mode: &Mode,
    method: Method,
    arms: &[(f64, Stream)],
    streams: u64,
    seed: u64,
) -> DeploymentTally {
    let mut rng = Rng::new(seed);
    let spec: Vec<crate::Arm> = arms
        .iter()
        .enumerate()
        .map(|(d, (gamma, _))| crate::Arm {
            name: format!("d{d}"),
            gamma: *gamma,
        })
        .collect();
    let mut out = DeploymentTally {
        streams,
        same: vec![0; arms.len()],
        ..DeploymentTally::default()
    };
    let mut total = 0u64;
    for _ in 0..streams {
        let mut test = crate::DeploymentTest::new(mode, method, 1.0, &spec).expect("valid arms");
        let verdict = loop {
            let n = test.n();
            let scores: Vec<f64> = arms
                .iter()
                .map(|(gamma, stream)| stream.draw(&mut rng, n) * 2.0 * gamma)
                .collect();
            match test.push(&scores).expect("simulated scores are in range") {
                Step::Continue => {}
                Step::Stop(v) => break v,
            }
        };
        total += test.n();
        match verdict {
            Verdict::Same => {
                let d = test.chosen().expect("SAME names a deployment")[1..]
                    .parse::<usize>()
                    .expect("d<index>");
                out.same[d] += 1;
            }
            Verdict::Different => out.different += 1,
            Verdict::Undecided => out.undecided += 1,
        }
    }
    out.mean_queries = total as f64 / streams.max(1) as f64;
    out
}
