//! How fast this machine multiplies matrices now: the basis of `pot plan`'s time estimates.

use std::time::Instant;

use burn::tensor::{Tensor, TensorData};

use crate::{Backend, ScoringError};

/// Rows of the measured product: a batch of challenges packed into one pass is ~900 tokens;
/// 512 rows reach the same throughput (`matmul_ceiling` example) at half the cost.
const ROWS: usize = 512;
/// Larger dimensions are capped: throughput is flat beyond this width and a 70B model's
/// 8192 x 28672 matrix would take seconds to build.
const MAX_WIDTH: usize = 4096;

/// f32 matmul throughput of `backend` in GFLOP/s at one block's shapes, `[512 x hidden] x
/// [hidden x intermediate]` (widths capped at 4096), best of three after a warm-up: about
/// 0.1-0.5 s on 2 cores.
pub fn matmul_gflops(
    backend: Backend,
    hidden: usize,
    intermediate: usize,
) -> Result<f64, ScoringError> {
    let device = backend.device()?;
    let (k, m) = (
        hidden.clamp(64, MAX_WIDTH),
        intermediate.clamp(64, MAX_WIDTH),
    );
    let a = Tensor::<2>::from_data(TensorData::new(vec![0.5f32; ROWS * k], [ROWS, k]), &device);
    let b = Tensor::<2>::from_data(TensorData::new(vec![0.25f32; k * m], [k, m]), &device);
    std::hint::black_box(a.clone().matmul(b.clone()).into_data());
    let best = (0..3)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(a.clone().matmul(b.clone()).into_data());
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    Ok(2.0 * (ROWS * k * m) as f64 / best / 1e9)
}
