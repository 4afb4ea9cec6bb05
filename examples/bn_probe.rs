//! The fused BN kernels alone on the training step's shapes (ResNet-18 CIFAR, batch 64 by
//! default, 4 groups), min of 7 per pass, and the memory traffic they imply:
//!
//!     cargo run --release --example bn_probe [-- BATCH]
use moco_harness::kernels::batch_norm::parts;
use std::time::Instant;

fn min_time(reps: usize, mut f: impl FnMut()) -> f64 {
    let cold = std::env::var_os("COLD").is_some();
    let mut junk = if cold { vec![1f32; 100 << 20] } else { Vec::new() };
    (0..reps)
        .map(|_| {
            // COLD=1: 400 MB written between reps, so the operands come from memory.
            junk.iter_mut().for_each(|v| *v += 1.0);
            std::hint::black_box(&junk);
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let n: usize = std::env::args().nth(1).map_or(64, |s| s.parse().expect("batch"));
    let (mut tf, mut tb) = (0.0, 0.0);
    // (channels, side, relu, residual, how many in the network)
    for &(c, side, relu, res, count) in &[
        (64, 32, true, false, 3),
        (64, 32, true, true, 2),
        (128, 16, true, false, 2),
        (128, 16, true, true, 2),
        (128, 16, false, false, 1),
        (256, 8, true, false, 2),
        (256, 8, true, true, 2),
        (256, 8, false, false, 1),
        (512, 4, true, false, 2),
        (512, 4, true, true, 2),
        (512, 4, false, false, 1),
    ] {
        let hw = side * side;
        let len = n * c * hw;
        let x: Vec<f32> = (0..len).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
        let r: Vec<f32> = (0..len).map(|i| ((i * 104729 % 1000) as f32 / 500.0) - 1.0).collect();
        let dy: Vec<f32> = (0..len).map(|i| ((i * 31 % 997) as f32 / 500.0) - 1.0).collect();
        let (w, b) = (vec![1.1f32; c], vec![0.1f32; c]);
        let d = (n, c, hw);
        let rr = res.then_some(&r[..]);
        let (_, st) = parts::forward(&x, &w, &b, rr, d, 4, relu);
        // The key encoder's forward too: two forwards per step.
        let f = min_time(7, || drop(std::hint::black_box(parts::forward(&x, &w, &b, rr, d, 4, relu))));
        // With the residual, the mask is applied before (mask_by_output), so relu = false here.
        let bw = min_time(7, || {
            drop(std::hint::black_box(parts::backward(&x, &dy, &w, &b, &st, d, 4, relu && !res)))
        });
        let mb = (len * 4) as f64 / 1e6;
        println!(
            "{c:4} ch {side:2}px relu {relu:5} res {res:5} x{count}: fwd {:7.3} ms ({:5.1} GB/s of x+y{}), bwd {:7.3} ms ({:5.1} GB/s of x+dy+dx)",
            f * 1e3,
            mb * if res { 3.0 } else { 2.0 } / f / 1e3,
            if res { "+r" } else { "" },
            bw * 1e3,
            mb * 3.0 / bw / 1e3
        );
        tf += 2.0 * f * count as f64;
        tb += bw * count as f64;
    }
    println!(
        "per step (2 forwards, 1 backward): fwd {:.1} ms, bwd {:.1} ms, total {:.1} ms",
        tf * 1e3,
        tb * 1e3,
        (tf + tb) * 1e3
    );
}
