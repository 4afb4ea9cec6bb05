//! A/B of the convolution kernel's GEMM widths on ResNet-18's 20 convolutions at batch 64:
//! interleaved rounds, min over rounds (this machine is shared and its speed moves by up to
//! 1.7x within minutes, so only numbers from one run compare).
//!
//!     cargo run --release --example conv_ab -- 128 256    # forward/grad-input GEMM widths
//!     cargo run --release --example conv_ab -- 40128      # width 128, weight-gradient K 4·64
//!     cargo run --release --example conv_ab -- 128 1000128 2000128
//!         # + 1,000,000: wide-tile weight gradients off (the gemm crate for all); + 2,000,000:
//!         # the 8×32 kernel for the implicit forward / grad-input (both: + 3,000,000)
//!     cargo run --release --example conv_ab -- 4000128 128
//!         # + 4,000,000: im2col / col2im row by row (no shifted runs for same-width layers)
//!     cargo run --release --example conv_ab -- 8000128 128
//!         # + 8,000,000: no Winograd (3×3 stride-1 forwards and grad-inputs as implicit GEMMs)
use moco_harness::kernels::conv::knobs::{self, Knobs};
use moco_harness::kernels::conv::{parts, ConvGeom};
use std::time::Instant;
fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let targets = if args.is_empty() { vec![128, 256, 512, 1024] } else { args };
    let n = 64;
    // (cin, cout, side, k, stride, pad)
    let mut shapes = vec![(3, 64, 32, 3, 1, 1)];
    for &(ci, co, side) in &[(64, 64, 32), (64, 128, 32), (128, 256, 16), (256, 512, 8)] {
        if ci != co {
            shapes.push((ci, co, side, 3, 2, 1));
            shapes.push((co, co, side / 2, 3, 1, 1));
            shapes.push((ci, co, side, 1, 2, 0));
            shapes.push((co, co, side / 2, 3, 1, 1));
            shapes.push((co, co, side / 2, 3, 1, 1));
        } else {
            for _ in 0..4 {
                shapes.push((ci, co, side, 3, 1, 1));
            }
        }
    }
    let v = |len: usize, s: usize| {
        (0..len)
            .map(|i| (((i + s) * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect::<Vec<f32>>()
    };
    let rounds = 7;
    // best[target][layer][pass]
    let mut best = vec![vec![[f64::MAX; 3]; shapes.len()]; targets.len()];
    for _ in 0..rounds {
        for (ti, &t) in targets.iter().enumerate() {
            let (off, t) = (t / 1_000_000, t % 1_000_000);
            knobs::set(Knobs {
                target_cols: t % 10000,
                target_gw_cols: if t >= 10000 { t / 10000 * 64 } else { 256 },
                wide_gw: off & 1 == 0,
                wide_fwd: off & 2 == 0,
                shifted_runs: off & 4 == 0,
                winograd: off & 8 == 0,
            });
            for (li, &(c, co, side, k, s, p)) in shapes.iter().enumerate() {
                let g = ConvGeom {
                    n,
                    c,
                    h: side,
                    w: side,
                    k,
                    stride: s,
                    pad: p,
                };
                let x = v(n * c * side * side, 1);
                let w = v(co * c * k * k, 2);
                let gy = v(n * co * g.ho() * g.wo(), 3);
                let t0 = Instant::now();
                std::hint::black_box(parts::forward(&x, &w, g, co));
                let t1 = Instant::now();
                if li > 0 {
                    std::hint::black_box(parts::grad_input(&x, &w, &gy, g, co));
                }
                let t2 = Instant::now();
                std::hint::black_box(parts::grad_weight(&x, &w, &gy, g, co));
                let t3 = Instant::now();
                let b = &mut best[ti][li];
                for (j, d) in [t1 - t0, t2 - t1, t3 - t2].iter().enumerate() {
                    b[j] = b[j].min(d.as_secs_f64());
                }
            }
        }
    }
    println!("target  fwd(x2)   gin     gw      total  (s per step, min of {rounds})");
    for (ti, &t) in targets.iter().enumerate() {
        let s: [f64; 3] = [0, 1, 2].map(|j| best[ti].iter().map(|b| b[j]).sum::<f64>());
        println!(
            "{t:6}  {:.3}   {:.3}   {:.3}   {:.3}",
            2.0 * s[0],
            s[1],
            s[2],
            2.0 * s[0] + s[1] + s[2]
        );
    }
    for (li, &(c, co, side, k, s, _)) in shapes.iter().enumerate() {
        let fl = 2.0 * (n * co * (side / s) * (side / s) * c * k * k) as f64 / 1e9;
        print!("{c:>3}->{co:<3} {k}x{k} s{s} {side:>2}px ");
        for per_target in &best {
            let b = per_target[li];
            print!(
                " | {:4.0} {:4.0} {:4.0}",
                fl / b[0],
                if li > 0 { fl / b[1] } else { 0.0 },
                fl / b[2]
            );
        }
        println!();
    }
}
