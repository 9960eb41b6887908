//! The machine's f32 FMA peak: independent AVX2 FMA chains on `THREADS` threads, no memory
//! traffic. No matmul can beat it; `cargo xtask bench scoring` reports the scorer's GFLOP/s as a
//! fraction of it. Prints one JSON line `{"threads": T, "gflops": G}`.
//!
//! `cargo run -p pot-scoring --example fma_peak -- [THREADS]`

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .map_or(1, |s| s.parse().expect("THREADS is a number"));
    let Some(flops_per_call) = fma::FLOPS_PER_ITERATION else {
        eprintln!("fma_peak needs an x86_64 CPU with AVX2 and FMA");
        std::process::exit(2);
    };
    let iterations = 100_000_000u64;
    // Best of three: the first run also wakes the cores up.
    let best = (0..3)
        .map(|_| {
            let start = std::time::Instant::now();
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(|| std::hint::black_box(fma::chains(iterations)));
                }
            });
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    let gflops = (threads as u64 * iterations * flops_per_call) as f64 / best / 1e9;
    println!("{{\"threads\": {threads}, \"gflops\": {gflops:.1}}}");
}

#[cfg(target_arch = "x86_64")]
mod fma {
    use std::arch::x86_64::*;

    /// 12 chains x 8 lanes x 2 flops per iteration: enough chains to cover the FMA latency of
    /// two pipes.
    pub const FLOPS_PER_ITERATION: Option<u64> = Some(12 * 8 * 2);

    pub fn chains(iterations: u64) -> f32 {
        assert!(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"));
        // SAFETY: the features were just detected.
        unsafe { run(iterations) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn run(iterations: u64) -> f32 {
        let mut acc = [_mm256_set1_ps(1.0); 12];
        let (b, c) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
        for _ in 0..iterations {
            for a in &mut acc {
                *a = _mm256_fmadd_ps(*a, b, c);
            }
        }
        let sum = acc
            .iter()
            .fold(_mm256_setzero_ps(), |s, &a| _mm256_add_ps(s, a));
        _mm256_cvtss_f32(sum)
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod fma {
    pub const FLOPS_PER_ITERATION: Option<u64> = None;
    pub fn chains(_: u64) -> f32 {
        unreachable!()
    }
}
