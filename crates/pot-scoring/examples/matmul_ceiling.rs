//! f32 matmul throughput at the shapes of a teacher-forced pass (N tokens x the projections of
//! Qwen2.5-0.5B, or of SmolLM2-135M with `smollm2`, and an 8,192-row head chunk): burn-flex's
//! matmul (the `gemm` crate; other backends' path) against the CPU pass's packed matmul
//! (`pot_scoring::matmul`), best of 5 alternating runs:
//! `cargo run -p pot-scoring --example matmul_ceiling -- [TOKENS] [qwen|smollm2]`.

use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use pot_scoring::matmul::{PackedMatrix, matmul};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(1024, |s| s.parse().expect("tokens"));
    let device = Device::flex();
    // (inputs, outputs): q/k/v, o, gate/up, down, head chunk.
    let shapes = match std::env::args().nth(2).as_deref() {
        Some("smollm2") => [
            (576, 960),
            (576, 576),
            (576, 3072),
            (1536, 576),
            (576, 8192),
        ],
        _ => [
            (896, 1152),
            (896, 896),
            (896, 9728),
            (4864, 896),
            (896, 8192),
        ],
    };
    for (k, m) in shapes {
        let x: Vec<f32> = (0..n * k).map(|i| (i % 13) as f32 * 0.01 - 0.06).collect();
        let w: Vec<f32> = (0..k * m).map(|i| (i % 11) as f32 * 0.01 - 0.05).collect();
        let a = Tensor::<2>::from_data(TensorData::new(x.clone(), [n, k]), &device);
        // burn: the weight as a resident model held it before packing, a transposed copy.
        let b = Tensor::<2>::from_data(TensorData::new(w.clone(), [m, k]), &device)
            .transpose()
            .into_data();
        let b = Tensor::<2>::from_data(b, &device);
        let packed = PackedMatrix::from_rows(&w, m, k);
        let mut out = vec![0.0f32; n * m];
        let (mut burn, mut ours) = (f64::MAX, f64::MAX);
        for _ in 0..5 {
            let start = Instant::now();
            std::hint::black_box(a.clone().matmul(b.clone()).into_data());
            burn = burn.min(start.elapsed().as_secs_f64());
            let start = Instant::now();
            matmul(&x, n, &packed, None, &mut out, m);
            std::hint::black_box(&out);
            ours = ours.min(start.elapsed().as_secs_f64());
        }
        let gflops = |s: f64| 2.0 * (n * k * m) as f64 / s / 1e9;
        println!(
            "[{n} x {k}] x [{k} x {m}]: burn-flex {:.1} ms, {:.1} GFLOP/s; packed {:.1} ms, {:.1} GFLOP/s",
            burn * 1e3,
            gflops(burn),
            ours * 1e3,
            gflops(ours)
        );
    }
}
