//! One 3×3 stride-1 layer's forward (C → C channels, SIDE × SIDE, batch N), Winograd on and off,
//! interleaved, 7 rounds of 5 calls (`ONLY=1`: Winograd only, for `perf`; `GW=1`: the weight
//! gradient instead):
//!
//!     cargo run --release --example wino_probe -- C SIDE [N]
use moco_harness::kernels::conv::knobs::{self, Knobs};
use moco_harness::kernels::conv::{parts, ConvGeom};
use std::time::Instant;
fn main() {
    let a: Vec<usize> = std::env::args().skip(1).filter_map(|s| s.parse().ok()).collect();
    let (c, side, n) = (a[0], a[1], *a.get(2).unwrap_or(&64));
    let g = ConvGeom {
        n,
        c,
        h: side,
        w: side,
        k: 3,
        stride: 1,
        pad: 1,
    };
    let x: Vec<f32> = (0..n * c * side * side)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let w: Vec<f32> = (0..c * c * 9).map(|i| ((i * 104729) % 1000) as f32 / 1000.0 - 0.5).collect();
    let gf = 2.0 * (n * c * c * 9 * side * side) as f64 / 1e9;
    let only = std::env::var_os("ONLY").is_some();
    // GW=1: the weight gradient (gY = x) instead of the forward.
    let gw = std::env::var_os("GW").is_some();
    for _ in 0..7 {
        for on in [true, false] {
            if only && !on {
                continue;
            }
            knobs::set(Knobs {
                winograd: on,
                ..Knobs::default()
            });
            let t = Instant::now();
            for _ in 0..5 {
                if gw {
                    std::hint::black_box(parts::grad_weight(&x, &w, &x, g, c));
                } else {
                    std::hint::black_box(parts::forward(&x, &w, g, c));
                }
            }
            let s = t.elapsed().as_secs_f64() / 5.0;
            print!("{}: {:.2} ms ({:.0} GF/s)  ", if on { "wino" } else { "impl" }, s * 1e3, gf / s);
        }
        println!();
    }
}
