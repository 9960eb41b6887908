//! burn-flex f32 matmul throughput at the shapes of a teacher-forced pass (N tokens x the
//! projections of Qwen2.5-0.5B, or of SmolLM2-135M with `smollm2`, and an 8,192-row head chunk):
//! `cargo run -p pot-scoring --example matmul_ceiling -- [TOKENS] [qwen|smollm2]`.

use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(1024, |s| s.parse().expect("tokens"));
    let device = Device::flex();
    // (inputs, outputs): q/o, k/v, gate/up, down, head chunk.
    let shapes = match std::env::args().nth(2).as_deref() {
        Some("smollm2") => [
            (576, 576),
            (576, 192),
            (576, 1536),
            (1536, 576),
            (576, 8192),
        ],
        _ => [
            (896, 896),
            (896, 128),
            (896, 4864),
            (4864, 896),
            (896, 8192),
        ],
    };
    for (k, m) in shapes {
        let a = Tensor::<2>::from_data(TensorData::new(vec![0.5f32; n * k], [n, k]), &device);
        let b = Tensor::<2>::from_data(TensorData::new(vec![0.25f32; k * m], [k, m]), &device);
        let _ = a.clone().matmul(b.clone()).into_data();
        let reps = 5;
        let start = Instant::now();
        for _ in 0..reps {
            std::hint::black_box(a.clone().matmul(b.clone()).into_data());
        }
        let s = start.elapsed().as_secs_f64() / reps as f64;
        // The same product with the weight stored as a linear layer's [out, in] and transposed
        // as a view: what a streamed pass could multiply by without copying each weight.
        let bt = Tensor::<2>::from_data(TensorData::new(vec![0.25f32; k * m], [m, k]), &device);
        let _ = a.clone().matmul(bt.clone().transpose()).into_data();
        let start = Instant::now();
        for _ in 0..reps {
            std::hint::black_box(a.clone().matmul(bt.clone().transpose()).into_data());
        }
        let st = start.elapsed().as_secs_f64() / reps as f64;
        println!(
            "[{n} x {k}] x [{k} x {m}]: {:.1} ms, {:.1} GFLOP/s; with [out, in] transposed as a view: {:.1} ms, {:.1} GFLOP/s",
            s * 1e3,
            2.0 * (n * k * m) as f64 / s / 1e9,
            st * 1e3,
            2.0 * (n * k * m) as f64 / st / 1e9
        );
    }
}
