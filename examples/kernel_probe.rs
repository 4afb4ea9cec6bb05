//! The two microkernels of `kernels::packed` on one core, operands in L1, interleaved rounds
//! (this machine's speed moves within minutes; compare lines of one run only):
//!
//!     RAYON_NUM_THREADS=1 cargo run --release --example kernel_probe
//!
//! - `8x32`: `packed::gemm` with `B` read in place, rows 64-byte aligned and not (the implicit
//!   convolution's rows sit at any shift);
//! - `wide 6x64`: `packed::wide_tile`, `A` a 64-wide panel, `B` six rows broadcast.
//!
//! and a register-only FMA loop for the core's peak.
use moco_harness::kernels::packed::{aligned_zeros, gemm, wide_tile, BSource, NoPack, PackedA, WR, WV};
use std::time::Instant;

fn peak() -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { peak_avx512() };
    }
    0.0
}

/// 12 independent chains of AVX-512 FMAs, registers only: the core's ceiling.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn peak_avx512() -> f64 {
    use std::arch::x86_64::*;
    let (b, c) = (_mm512_set1_ps(0.5), _mm512_set1_ps(0.25));
    let mut r = [_mm512_setzero_ps(); 12];
    let n: usize = 20_000_000;
    let t = Instant::now();
    for _ in 0..n {
        for x in r.iter_mut() {
            *x = _mm512_fmadd_ps(*x, b, c);
        }
        std::arch::asm!("");
    }
    let s = t.elapsed().as_secs_f64();
    std::hint::black_box(r);
    (n * 12 * 32) as f64 / s / 1e9
}

fn main() {
    let kc = 192;
    let (m, n) = (64, 32 * 8);
    let w: Vec<f32> = (0..m * kc).map(|i| (i % 97) as f32 / 97.0).collect();
    let a = PackedA::new(&w, m, kc, kc, 1);
    let (mut bbuf, b0) = aligned_zeros(kc * n + 64);
    bbuf.iter_mut().enumerate().for_each(|(i, v)| *v = (i % 89) as f32 / 89.0);
    let mut c = vec![0f32; m * n];
    let (mut apanel, a0) = aligned_zeros(kc * WV);
    apanel.iter_mut().enumerate().for_each(|(i, v)| *v = (i % 83) as f32 / 83.0);
    let mut tile = vec![0f32; WR * WV];
    let mut res: Vec<(String, Vec<f64>)> = Vec::new();
    let mut push = |name: &str, v: f64| match res.iter_mut().find(|r| r.0 == name) {
        Some(r) => r.1.push(v),
        None => res.push((name.to_string(), vec![v])),
    };
    for _ in 0..7 {
        push("peak (register FMAs)", peak());
        for (name, shift) in [("8x32, B rows aligned", 0), ("8x32, B rows shifted 3", 3)] {
            let offs: Vec<usize> = (0..kc).map(|k| b0 + shift + k * n).collect();
            let reps = 400;
            let t = Instant::now();
            for _ in 0..reps {
                gemm::<NoPack>(&a, n, &mut c, n, true, BSource::Rows { base: &bbuf, offs: &offs });
            }
            push(name, (2 * reps * m * n * kc) as f64 / t.elapsed().as_secs_f64() / 1e9);
        }
        let boff: [usize; WR] = std::array::from_fn(|j| b0 + 3 + j * kc);
        let reps = 30_000;
        let t = Instant::now();
        for _ in 0..reps {
            // SAFETY: the panel holds kc·WV floats, each B row kc floats, the tile WR × WV.
            unsafe { wide_tile(kc, apanel[a0..].as_ptr(), bbuf.as_ptr(), &boff, tile.as_mut_ptr(), WV, true) }
        }
        push("wide 6x64", (2 * reps * WR * WV * kc) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    for (name, mut v) in res {
        v.sort_by(f64::total_cmp);
        println!("{name:26} median {:6.1}  max {:6.1} GFLOP/s", v[v.len() / 2], v[v.len() - 1]);
    }
}
