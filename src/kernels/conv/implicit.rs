//! Stride-1 convolutions as an implicit GEMM: each image is copied into zero-padded planes,
//! and every row of the column matrix is that padded image at a fixed shift, read in place —
//! no column matrix is written, read or packed. The forward ([`forward`], also the grad-input
//! taken as a forward) runs on the wide tile or the 8×32 tile, the weight gradient
//! ([`grad_weight`]) on the wide tile; [`applies_fwd`] and [`applies_gw`] say when the
//! dispatch takes them.

use super::geometry::ConvGeom;
use super::knobs;
use super::split::{gw_from_parts, GW_TASKS};
use super::wide::{self, pack_wide, panels_t, wide_gw, wide_product};
use crate::kernels::cpu::unwritten;
use crate::kernels::packed::{self, BSource, NoPack, PackedA, NR, WR, WV};
use rayon::prelude::*;

/// Stride-1 convolutions whose output plane has at least this many pixels run as an implicit
/// GEMM ([`forward`]); below it the padded-width grid wastes too much (a third at 4×4).
const MIN_PLANE: usize = 256;

/// Output planes from this size up take the implicit weight gradient: on smaller planes the
/// grid is short and its padding a larger share (a third of a 4×4 grid), and the wide tile
/// over im2col columns was as fast at 16×16 and faster at 8×8 and 4×4 (bench/README.md).
const GW_MIN_PLANE: usize = 512;

/// A task's partial `gWᵀ` of the implicit weight gradient is kept under this size (L2), the
/// taps split into more parts when the layer's weight is larger.
const GW_ACC_BYTES: usize = 256 << 10;

/// Whether [`forward`] takes this forward. Only with the AVX-512 microkernel: the portable one
/// is exact but scalar, far slower than the `gemm` crate's im2col path.
pub(super) fn applies_fwd(g: &ConvGeom) -> bool {
    packed::has_fast_kernel() && g.stride == 1 && g.ho() * g.wo() >= MIN_PLANE
}

/// Whether the weight gradient runs as [`grad_weight`]: stride 1, a plane of [`GW_MIN_PLANE`]+
/// outputs, and what every wide-tile weight gradient needs ([`wide::gw_applies`]).
pub(super) fn applies_gw(g: &ConvGeom, cout: usize) -> bool {
    wide::gw_applies(g, cout) && g.stride == 1 && g.ho() * g.wo() >= GW_MIN_PLANE
}

/// The rows of an implicit GEMM's column matrix: row `(c, ky, kx)` starts at
/// `c·Hp·Wp + ky·Wp + kx` in the zero-padded image (planes `pp = Hp·Wp`, rows `wp` apart).
fn tap_offsets(g: &ConvGeom, wp: usize, pp: usize) -> Vec<usize> {
    let kk2 = g.k * g.k;
    (0..g.row_len())
        .map(|j| (j / kk2) * pp + ((j / g.k) % g.k) * wp + j % g.k)
        .collect()
}

/// Copy one image `(C, H, W)` into the interior of its zero-padded planes `(C, Hp, Wp)` (the
/// padding is never written, so a reused buffer keeps it zero).
fn pad_image(xi: &[f32], g: &ConvGeom, wp: usize, pp: usize, xpad: &mut [f32]) {
    let hw = g.h * g.w;
    for c in 0..g.c {
        for iy in 0..g.h {
            xpad[c * pp + (iy + g.pad) * wp + g.pad..][..g.w].copy_from_slice(&xi[c * hw + iy * g.w..][..g.w]);
        }
    }
}

/// Stride-1 convolution as an implicit GEMM, `w` the weight `(Cout, C·k·k)` row-major: each
/// image is copied into a zero-padded plane per channel `(Hp, Wp)`, and output `(oy, ox)` taken
/// on the padded-width grid `q = oy·Wp + ox` reads tap `(c, ky, kx)` at
/// `q + c·Hp·Wp + ky·Wp + kx` — every row of the column matrix is the padded image at a fixed
/// shift. The grid's `Wp − Wo` extra columns per output row are computed and dropped (6% of
/// the work at 32×32, 11% at 16×16).
///
/// The product runs on the wide tile ([`wide_product`]: 6 output positions × 64 output
/// channels, `A` the weight in 64-channel k-major panels, `B` the padded image's shifted rows
/// broadcast, no vector load of an unaligned row) when `Cout` is a multiple of 64 and
/// [`knobs::Knobs::wide_fwd`] is on, landing position-major `(grid, Cout)` and transposed into
/// NCHW; else on the 8×32 tile ([`packed::gemm`] with `B` read in place), landing
/// `(Cout, grid)`.
pub(super) fn forward(x: &[f32], w: &[f32], g: ConvGeom, cout: usize) -> Vec<f32> {
    debug_assert_eq!(g.stride, 1);
    let wide = wide::wide_channels(cout) && knobs::get().wide_fwd;
    let (ho, wo) = (g.ho(), g.wo());
    let plane = ho * wo;
    let (hp, wp) = (g.h + 2 * g.pad, g.w + 2 * g.pad);
    let (pp, hw) = (hp * wp, g.h * g.w);
    let chw = g.c * hw;
    let rl = g.row_len();
    let offs = tap_offsets(&g, wp, pp);
    let grid = ho * wp;
    let gridp = grid.next_multiple_of(WR);
    // The weight, packed for the kernel that runs.
    let (apw, a0) = if wide { pack_wide(w, cout, rl) } else { (Vec::new(), 0) };
    let a8 = (!wide).then(|| PackedA::new(w, cout, rl, rl, 1));
    // The last tap's shift plus the grid rounded up to whole tiles (wide) or panels (8×32)
    // stays inside.
    let xpad_len = g.c * pp + g.k + if wide { WR + gridp - grid } else { NR };
    let prod_len = if wide { gridp * cout } else { cout * grid };
    // SAFETY: each image's task writes every (channel, row, column) of its output below
    // (both copy-outs cover oy < Ho, all channels, ox < Wo).
    let mut y = unsafe { unwritten(g.n * cout * plane) };
    y.par_chunks_mut(cout * plane).enumerate().for_each_init(
        // The padding is never written, so it stays zero for every image of the task.
        || (vec![0f32; xpad_len], vec![0f32; prod_len]),
        |(xpad, prod), (i, yi)| {
            pad_image(&x[i * chw..(i + 1) * chw], &g, wp, pp, xpad);
            match &a8 {
                None => {
                    wide_product(&apw[a0..], cout, xpad, &offs, grid, prod);
                    for oy in 0..ho {
                        let rows = &prod[oy * wp * cout..][..wo * cout];
                        for o in 0..cout {
                            let dst = &mut yi[o * plane + oy * wo..][..wo];
                            for (ox, d) in dst.iter_mut().enumerate() {
                                *d = rows[ox * cout + o];
                            }
                        }
                    }
                }
                Some(a) => {
                    packed::gemm::<NoPack>(a, grid, prod, grid, false, BSource::Rows { base: xpad, offs: &offs });
                    for o in 0..cout {
                        for oy in 0..ho {
                            yi[o * plane + oy * wo..][..wo].copy_from_slice(&prod[o * grid + oy * wp..][..wo]);
                        }
                    }
                }
            }
        },
    );
    y
}

/// Weight gradient of a stride-1 convolution as an implicit GEMM on the wide tile
/// ([`packed::wide_tile`]): with `q = oy·Wp + ox` on the padded-width output grid,
/// `gWᵀ[(c, ky, kx)][o] = Σ_q xpad[c·Hp·Wp + ky·Wp + kx + q] · gY[o][q]` — each row of the
/// column matrix is the zero-padded image at a fixed shift, read in place (no im2col), and
/// `gY` is laid out `q`-major in 64-channel panels with zeros at the `Wp − Wo` extra columns
/// (so they add nothing). Tasks: taps × image chunks, fixed whatever the thread count, image
/// chunks added in order ([`gw_from_parts`]).
pub(super) fn grad_weight(x: &[f32], gy: &[f32], g: ConvGeom, cout: usize) -> Vec<f32> {
    debug_assert!(g.stride == 1 && cout.is_multiple_of(WV));
    let (ho, wo) = (g.ho(), g.wo());
    let (hp, wp) = (g.h + 2 * g.pad, g.w + 2 * g.pad);
    let (pp, hw, plane) = (hp * wp, g.h * g.w, ho * wo);
    let grid = ho * wp;
    let rl = g.row_len();
    let roff = tap_offsets(&g, wp, pp);
    let panels = cout / WV;
    let parts = (rl * cout * 4).div_ceil(GW_ACC_BYTES).clamp(1, GW_TASKS);
    let rows_per = rl.div_ceil(parts).next_multiple_of(WR);
    let parts = rl.div_ceil(rows_per);
    let imgs_per = g.n.div_ceil((GW_TASKS / parts).clamp(1, g.n.max(1))).max(1);
    let chunks = g.n.div_ceil(imgs_per);
    // The last tap's shift plus the whole grid stays inside.
    let xpad_len = g.c * pp + g.k + WR;
    gw_from_parts(chunks, parts, rows_per, rl, cout, |ci, p| {
        let rows = p * rows_per..((p + 1) * rows_per).min(rl);
        let nr = rows.len();
        let mut acc = vec![0f32; nr * cout];
        // Padding and the extra grid columns are never written: they stay zero.
        let mut xpad = vec![0f32; xpad_len];
        let (mut gyt, go) = packed::aligned_zeros(panels * grid * WV);
        let gyt = &mut gyt[go..go + panels * grid * WV];
        for i in ci * imgs_per..((ci + 1) * imgs_per).min(g.n) {
            let xi = &x[i * g.c * hw..(i + 1) * g.c * hw];
            pad_image(xi, &g, wp, pp, &mut xpad);
            panels_t(&gy[i * cout * plane..(i + 1) * cout * plane], cout, ho, wo, wp, gyt, grid * WV);
            wide_gw(&mut acc, cout, nr, |r| roff[rows.start + r], &xpad, gyt, grid * WV, grid);
        }
        acc
    })
}

#[cfg(test)]
mod tests {
    use super::super::reference;
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The wide-tile implicit convolution against an f64 reference: grids not a multiple of
    /// the tile, two 64-channel panels, K across several blocks, 1×1, 5×5 and unpadded
    /// kernels. Called directly, so it runs (on the portable kernel) without AVX-512 too.
    #[test]
    fn wide_implicit_forward_matches_a_reference() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
        for (n, c, h, w, cout, k, pad) in [
            (2, 5, 9, 7, 64, 3, 1),
            (1, 20, 6, 6, 128, 3, 1),
            (3, 7, 5, 8, 64, 1, 0),
            (2, 2, 11, 10, 64, 5, 2),
            (2, 4, 12, 9, 64, 3, 0),
        ] {
            let g = ConvGeom {
                n,
                c,
                h,
                w,
                k,
                stride: 1,
                pad,
            };
            let mut vals = |n: usize| (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect::<Vec<_>>();
            let x = vals(n * c * h * w);
            let wt = vals(cout * g.row_len());
            let got = forward(&x, &wt, g, cout);
            let want = reference::forward(&x, &wt, &g, cout);
            for (a, s) in got.iter().zip(&want) {
                let a = *a as f64;
                assert!((a - s).abs() < 1e-4 * (1.0 + s.abs()), "{g:?} cout {cout}: {a} vs {s}");
            }
        }
    }

    /// The implicit weight gradient (wide tile, padded grid) against an f64 reference on shapes
    /// with every edge: taps not a multiple of the tile, several 64-channel panels, taps split
    /// into parts (a weight over 256 KB), 1×1, 5×5 and unpadded kernels, grids longer than one
    /// block; the same bits with 1, 2 and 3 threads. Called directly, so it runs (on the
    /// portable kernel) on CPUs without AVX-512 too.
    #[test]
    fn implicit_weight_gradient_matches_a_reference() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for (n, c, h, w, cout, k, pad) in [
            (3, 5, 9, 7, 64, 3, 1),
            (2, 3, 6, 6, 128, 3, 1),
            (4, 7, 5, 8, 64, 1, 0),
            (2, 2, 11, 10, 64, 5, 2),
            (3, 4, 12, 9, 64, 3, 0),
            (2, 128, 4, 4, 128, 3, 1),
            (9, 2, 17, 16, 64, 3, 1),
        ] {
            let g = ConvGeom {
                n,
                c,
                h,
                w,
                k,
                stride: 1,
                pad,
            };
            let mut vals = |n: usize| (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect::<Vec<_>>();
            let x = vals(n * c * h * w);
            let gy = vals(n * cout * g.ho() * g.wo());
            let want = reference::grad_weight(&x, &gy, &g, cout);
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| grad_weight(&x, &gy, g, cout))
            };
            let got = run(1);
            for (j, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (*a as f64 - b).abs() < 1e-4 * (1.0 + b.abs()),
                    "{g:?} cout {cout} [{j}]: {a} vs {b}"
                );
            }
            for threads in [2, 3] {
                assert!(
                    run(threads).iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{threads} threads"
                );
            }
        }
    }
}
