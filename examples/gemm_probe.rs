//! Single-threaded GEMM shapes of one image of each ResNet-18 layer class, through the `gemm`
//! crate (both weight-gradient orientations, both grad-input layouts) and through
//! `kernels::packed`: `cargo run --release --example gemm_probe`. The machine's speed moves
//! within minutes; compare lines of one run only.
use std::time::Instant;
fn time(name: &str, flop: f64, mut f: impl FnMut()) {
    for _ in 0..3 {
        f();
    }
    let reps = 20;
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    let s = t.elapsed().as_secs_f64() / reps as f64;
    println!("{name:50} {:8.1} us  {:6.1} GFLOP/s", s * 1e6, flop / s / 1e9);
}
#[allow(clippy::too_many_arguments)]
fn gs(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    drc: (usize, usize),
    acc: bool,
    lhs: &[f32],
    lrc: (usize, usize),
    rhs: &[f32],
    rrc: (usize, usize),
) {
    // SAFETY: every caller passes buffers covering the strided ranges.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            drc.1 as isize,
            drc.0 as isize,
            acc,
            lhs.as_ptr(),
            lrc.1 as isize,
            lrc.0 as isize,
            rhs.as_ptr(),
            rrc.1 as isize,
            rrc.0 as isize,
            if acc { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}
fn main() {
    use moco_harness::kernels::packed::{self, BSource, PackedA, NR};
    let v = |n: usize| (0..n).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect::<Vec<f32>>();
    // One image of each layer class: the weight gradient in both orientations, grad-input
    // with Wᵀ read through strides or stored row-major, and the forward product through the
    // `gemm` crate and through kernels::packed (B copied from pre-packed NR-column panels by
    // its packer, so the copy is timed too), all single-threaded.
    for &(c, co, n) in &[
        (64usize, 64usize, 1024usize),
        (64, 64, 256),
        (128, 128, 256),
        (256, 256, 256),
        (512, 512, 256),
    ] {
        let rl = c * 9;
        let w = v(co * rl);
        let cols = v(rl * n);
        let gy = v(co * n);
        let fl = 2.0 * (co * rl * n) as f64;
        let mut gw = vec![0f32; co * rl];
        time(&format!("gW  ({co},{rl}) += gY colsT (K={n})"), fl, || {
            gs(co, rl, n, &mut gw, (rl, 1), true, &gy, (n, 1), &cols, (1, n))
        });
        time(&format!("gWT ({rl},{co}) += cols gYT (K={n})"), fl, || {
            gs(rl, co, n, &mut gw, (co, 1), true, &cols, (n, 1), &gy, (1, n))
        });
        let mut gc = vec![0f32; rl * n];
        time(&format!("gcols ({rl},{n}) = W^T gY, W strided"), fl, || {
            gs(rl, n, co, &mut gc, (n, 1), false, &w, (1, rl), &gy, (n, 1))
        });
        let wt = v(rl * co);
        time(&format!("gcols ({rl},{n}) = W^T gY, W^T row-major"), fl, || {
            gs(rl, n, co, &mut gc, (n, 1), false, &wt, (co, 1), &gy, (n, 1))
        });
        let mut y = vec![0f32; co * n];
        time(&format!("Y ({co},{n}) = W cols, gemm crate"), fl, || {
            gs(co, n, rl, &mut y, (n, 1), false, &w, (rl, 1), &cols, (n, 1))
        });
        let pa = PackedA::new(&w, co, rl, rl, 1);
        let mut panels = vec![0f32; rl * n.next_multiple_of(NR)];
        for p in 0..n.div_ceil(NR) {
            for kk in 0..rl {
                for j in 0..NR.min(n - p * NR) {
                    panels[(p * rl + kk) * NR + j] = cols[kk * n + p * NR + j];
                }
            }
        }
        let mut buf = packed::panel_buffer();
        time(&format!("Y ({co},{n}) = W cols, kernels::packed"), fl, || {
            let pack = |k0: usize, kl: usize, n0: usize, nw: usize, bp: &mut [f32]| {
                let src = &panels[(n0 / NR * rl + k0) * NR..];
                for kk in 0..kl {
                    bp[kk * NR..kk * NR + nw].copy_from_slice(&src[kk * NR..kk * NR + nw]);
                }
            };
            packed::gemm(&pa, n, &mut y, n, false, BSource::Packed { pack, buf: &mut buf })
        });
    }
}
