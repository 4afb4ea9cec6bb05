//! 3×3 stride-1 padding-1 convolutions by Winograd's minimal filtering F(2×2, 3×3) (Lavin &
//! Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016; cuDNN's and NNPACK's
//! `WINOGRAD` algorithm): every 2×2 output tile is `Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` of its 4×4
//! input patch `d`, so a tile costs 16 multiplies per (input, output) channel pair instead of
//! 36 — the product is 16 independent GEMMs, `M[ξ] (Cout × tiles) = U[ξ] (Cout × C) · V[ξ]
//! (C × tiles)`, one per point ξ of the 4×4 transformed tile, 2.25x fewer FLOPs than the
//! direct convolution.
//!
//! ```text
//! Bᵀ = [1  0 −1  0]     G = [1    0    0 ]     Aᵀ = [1 1  1  0]
//!      [0  1  1  0]         [½    ½    ½ ]          [0 1 −1 −1]
//!      [0 −1  1  0]         [½   −½    ½ ]
//!      [0  1  0 −1]         [0    0    1 ]
//! ```
//!
//! Work goes by blocks of whole tile rows (a few hundred tiles, chosen so a block's `V` and `M`
//! stay near L2): the input transform writes `V` tile-contiguous per (ξ, channel), the 16
//! products run on [`packed::gemm`]'s 8×32 tile with `V`'s rows read in place (aligned), and the
//! output transform writes NCHW. Both transforms are adds only and run along a row of tiles.
//! The rounding differs from the direct sum (the transforms add before multiplying; `G`'s
//! halves are exact): relative differences ~1e-6, as with cuDNN's Winograd.
//! The training step's forwards and grad-inputs of 3×3 stride-1 layers on planes of 8×8 and
//! more run here, and their weight gradients on planes of 16×16 and more ([`grad_weight`]:
//! Winograd F(3×3, 2×2), the same transforms transposed).

use super::geometry::ConvGeom;
use super::knobs;
use super::wide::{self, wide_gw};
use crate::kernels::cpu::{unwritten, SendPtr};
use crate::kernels::packed::{self, BSource, NoPack, PackedA, MR, NR, WV};
use rayon::prelude::*;
use std::ops::Range;

/// Whether a convolution (`cout` output channels) runs here: 3×3, stride 1, padding 1 (output =
/// input size), with the AVX-512 microkernel (the portable one is exact but scalar), and
/// [`knobs::Knobs::winograd`] on.
pub(super) fn applies(g: &ConvGeom, cout: usize) -> bool {
    knobs::get().winograd
        && packed::has_fast_kernel()
        && (g.k, g.stride, g.pad) == (3, 1, 1)
        && g.n > 0
        && g.c.min(cout) >= MIN_CHANNELS
        && g.h * g.w >= MIN_PLANE
}

/// Fewer input or output channels stay on the implicit GEMM: the transforms then outweigh
/// the products. At 32 channels the forward alone breaks even or wins, but the CPU sweeps'
/// width-8 model (`experiments/cifar10-cpu.toml`, 32 channels at 8×8) stepped slower with
/// Winograd than without (bench/README.md).
const MIN_CHANNELS: usize = 64;

/// Whether a weight gradient runs here ([`grad_weight`]): as [`applies`], on planes of 16×16
/// and more (at 8×8 each task's sums `S`, 16·C·Cout floats, and their reduction cost more than
/// the product saves), with what every wide-tile weight gradient needs
/// ([`wide::gw_applies`]: its products run on the wide tile).
pub(super) fn applies_gw(g: &ConvGeom, cout: usize) -> bool {
    applies(g, cout) && g.h * g.w >= 256 && wide::gw_applies(g, cout)
}

/// Smaller planes stay on the implicit GEMM: at 4×4 a tile row is two tiles, and the
/// transforms and the weight's (16·C·Cout values per call) cost more than the product saves.
const MIN_PLANE: usize = 64;

/// Points of a transformed 4×4 tile, hence independent products per block.
const XI: usize = 16;

/// `U[ξ] = (G g Gᵀ)[ξ]` for every (output, input) channel pair, written straight into the
/// packed layout of [`packed::gemm`]: one `PackedA` (Cout × C) per ξ. `w` is `(Cout, C, 3, 3)`.
/// One task per panel of [`MR`] output channels (tasks write disjoint slots; a cache line may
/// straddle two panels, which costs sharing, not correctness).
fn transform_weights(w: &[f32], cout: usize, c: usize) -> Vec<PackedA> {
    let mut u: Vec<PackedA> = (0..XI).map(|_| PackedA::zeroed(cout, c)).collect();
    let ptrs: Vec<SendPtr> = u.iter_mut().map(|a| SendPtr(a.data_mut().as_mut_ptr())).collect();
    let u0 = &u[0];
    (0..cout.div_ceil(MR)).into_par_iter().for_each(|panel| {
        for ci in 0..c {
            for o in panel * MR..((panel + 1) * MR).min(cout) {
                let g = &w[(o * c + ci) * 9..][..9];
                // G (a, b, d) = (a, (a+b+d)/2, (a−b+d)/2, d): down the kernel's columns j,
                // then across each resulting row i.
                let gv = |a: f32, b: f32, d: f32| [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d];
                let cols: [[f32; 4]; 3] = std::array::from_fn(|j| gv(g[j], g[3 + j], g[6 + j]));
                let at = u0.slot(o, ci);
                for i in 0..4 {
                    for (j, v) in gv(cols[0][i], cols[1][i], cols[2][i]).into_iter().enumerate() {
                        // SAFETY: every ξ's packing has u0's shape, so `at` is inside it;
                        // output channel o's slots belong to this panel's task alone.
                        unsafe { *ptrs[4 * i + j].0.add(at) = v };
                    }
                }
            }
        }
    });
    u
}

/// `V[ξ][tx]` (rows `vrow` apart from `v`) `= (Bᵀ d B)[ξ]` for the tiles of tile row `ty` of
/// one channel plane `x` (`h × w`, `tw` tiles a row): the four input rows `2ty − 1 …` (zero
/// outside), padded column `p` = input column `p − 1`. Portable; [`avx512::input_row`] is the
/// fast one.
/// # Safety
/// `v + ξ·vrow + tx` is writable for ξ < 16, tx < tw.
unsafe fn input_row(x: &[f32], h: usize, w: usize, ty: usize, tw: usize, v: *mut f32, vrow: usize) {
    let at = |i: usize, p: usize| {
        let (y, xc) = ((2 * ty + i).wrapping_sub(1), p.wrapping_sub(1));
        if y < h && xc < w {
            x[y * w + xc]
        } else {
            0.0
        }
    };
    for tx in 0..tw {
        // Bᵀ d down the columns of the tile's 4×4 patch, then across each resulting row.
        let bt = |d: [f32; 4]| [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]];
        let cols: [[f32; 4]; 4] = std::array::from_fn(|j| bt(std::array::from_fn(|i| at(i, 2 * tx + j))));
        for i in 0..4 {
            let u = bt(cols.map(|col| col[i]));
            for (j, val) in u.into_iter().enumerate() {
                *v.add((4 * i + j) * vrow + tx) = val;
            }
        }
    }
}

/// The output tiles of one tile row from `M[ξ][tx]` (rows `mrow` apart from `m`): `Aᵀ m A`,
/// into output rows `2ty`, `2ty + 1` of the channel plane `y` (`ho × wo`, clipped at odd
/// edges). Portable; [`avx512::output_row`] is the fast one.
///
/// # Safety
/// `y` is a `ho × wo` plane whose rows `2ty`, `2ty + 1` the caller alone writes; `m + ξ·mrow
/// + tx` is readable for ξ < 16, tx < tw.
unsafe fn output_row(m: *const f32, mrow: usize, tw: usize, ty: usize, ho: usize, wo: usize, y: *mut f32) {
    for tx in 0..tw {
        let mm = |xi: usize| *m.add(xi * mrow + tx);
        // Aᵀ m: rows s0 = m0 + m1 + m2, s1 = m1 − m2 − m3; then the same across the columns.
        let s: [[f32; 4]; 2] = [
            std::array::from_fn(|j| mm(j) + mm(4 + j) + mm(8 + j)),
            std::array::from_fn(|j| mm(4 + j) - mm(8 + j) - mm(12 + j)),
        ];
        for (a, r) in s.iter().enumerate() {
            let (oy, ox) = (2 * ty + a, 2 * tx);
            for (b, val) in [r[0] + r[1] + r[2], r[1] - r[2] - r[3]].into_iter().enumerate() {
                if oy < ho && ox + b < wo {
                    *y.add(oy * wo + ox + b) = val;
                }
            }
        }
    }
}

/// The transforms on 16 tiles at a time: masked loads do the padding, permutes split even
/// and odd columns (input) and interleave them (output), so no scratch row is written and
/// read back (a 16-wide load of a row just stored at a one-float shift stalls on store
/// forwarding).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// Lanes `lo..hi` set (empty when `hi ≤ lo`).
    #[inline(always)]
    fn lanes(lo: isize, hi: isize) -> __mmask16 {
        let (lo, hi) = (lo.clamp(0, 16), hi.clamp(0, 16));
        if hi <= lo {
            0
        } else {
            (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as __mmask16
        }
    }

    /// The 16 lanes `f(0..16)` as an index vector.
    #[inline(always)]
    unsafe fn idx(f: impl Fn(i32) -> i32) -> __m512i {
        let mut v = [0i32; 16];
        for (l, x) in v.iter_mut().enumerate() {
            *x = f(l as i32);
        }
        _mm512_loadu_si512(v.as_ptr().cast())
    }

    /// [`super::input_row`].
    ///
    /// # Safety
    /// As [`super::input_row`]; the CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn input_row(x: &[f32], h: usize, w: usize, ty: usize, tw: usize, v: *mut f32, vrow: usize) {
        let mut rows: [Option<*const f32>; 4] = [None; 4];
        for (i, r) in rows.iter_mut().enumerate() {
            let y = (2 * ty + i).wrapping_sub(1);
            *r = (y < h).then(|| x[y * w..][..w].as_ptr());
        }
        // Even / odd padded columns of the 32 loaded ones, and the same shifted by one tile
        // (lane 15 of the shifted pair comes from the third load).
        let (ie0, io0) = (idx(|l| 2 * l), idx(|l| 2 * l + 1));
        let (ie1, io1) = (idx(|l| (2 * l + 2).min(31)), idx(|l| (2 * l + 3).min(31)));
        let (c0, c1) = (_mm512_set1_epi32(0), _mm512_set1_epi32(1));
        for tx0 in (0..tw).step_by(16) {
            let store = lanes(0, (tw - tx0) as isize);
            // Padded columns q = 0..34 of this chunk are input columns xs + q.
            let xs = 2 * tx0 as isize - 1;
            let seg = |r: Option<*const f32>, q0: isize, len: isize| match r {
                Some(r) => {
                    let s = xs + q0;
                    // SAFETY: only the lanes inside the row (0 ≤ s + l < w) are read.
                    unsafe { _mm512_maskz_loadu_ps(lanes(-s, (w as isize - s).min(len)), r.wrapping_offset(s)) }
                }
                None => _mm512_setzero_ps(),
            };
            let d = rows.map(|r| [seg(r, 0, 16), seg(r, 16, 16), seg(r, 32, 2)]);
            // Bᵀ d down the columns: d0 − d2, d1 + d2, d2 − d1, d1 − d3 (each of the 3 loads).
            let op = |f: unsafe fn(__m512, __m512) -> __m512, a: [__m512; 3], b: [__m512; 3]| {
                // SAFETY: f is an AVX-512F intrinsic, and the CPU has AVX-512F.
                [0, 1, 2].map(|k| unsafe { f(a[k], b[k]) })
            };
            let t = [
                op(_mm512_sub_ps, d[0], d[2]),
                op(_mm512_add_ps, d[1], d[2]),
                op(_mm512_sub_ps, d[2], d[1]),
                op(_mm512_sub_ps, d[1], d[3]),
            ];
            for (i, t) in t.iter().enumerate() {
                let e0 = _mm512_permutex2var_ps(t[0], ie0, t[1]);
                let o0 = _mm512_permutex2var_ps(t[0], io0, t[1]);
                let e1 = _mm512_mask_permutexvar_ps(_mm512_permutex2var_ps(t[0], ie1, t[1]), 1 << 15, c0, t[2]);
                let o1 = _mm512_mask_permutexvar_ps(_mm512_permutex2var_ps(t[0], io1, t[1]), 1 << 15, c1, t[2]);
                let out = [
                    _mm512_sub_ps(e0, e1),
                    _mm512_add_ps(o0, e1),
                    _mm512_sub_ps(e1, o0),
                    _mm512_sub_ps(o0, o1),
                ];
                for (j, val) in out.into_iter().enumerate() {
                    _mm512_mask_storeu_ps(v.add((4 * i + j) * vrow + tx0), store, val);
                }
            }
        }
    }

    /// [`super::output_row`].
    ///
    /// # Safety
    /// As [`super::output_row`]; the CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn output_row(m: *const f32, mrow: usize, tw: usize, ty: usize, ho: usize, wo: usize, y: *mut f32) {
        let (lo, hi) = (idx(|l| (l / 2) + 16 * (l % 2)), idx(|l| 8 + (l / 2) + 16 * (l % 2)));
        for tx0 in (0..tw).step_by(16) {
            let load = lanes(0, (tw - tx0) as isize);
            let mut mm = [_mm512_setzero_ps(); 16];
            for (xi, v) in mm.iter_mut().enumerate() {
                *v = _mm512_maskz_loadu_ps(load, m.add(xi * mrow + tx0));
            }
            let mut s = [[_mm512_setzero_ps(); 4]; 2];
            for j in 0..4 {
                s[0][j] = _mm512_add_ps(_mm512_add_ps(mm[j], mm[4 + j]), mm[8 + j]);
                s[1][j] = _mm512_sub_ps(_mm512_sub_ps(mm[4 + j], mm[8 + j]), mm[12 + j]);
            }
            for (a, r) in s.iter().enumerate() {
                let oy = 2 * ty + a;
                if oy >= ho {
                    continue;
                }
                let ev = _mm512_add_ps(_mm512_add_ps(r[0], r[1]), r[2]);
                let od = _mm512_sub_ps(_mm512_sub_ps(r[1], r[2]), r[3]);
                let n = (wo - 2 * tx0) as isize; // output columns left in this row
                let dst = y.add(oy * wo + 2 * tx0);
                _mm512_mask_storeu_ps(dst, lanes(0, n), _mm512_permutex2var_ps(ev, lo, od));
                // wrapping: past the plane's end when n ≤ 16 (the mask is empty then).
                _mm512_mask_storeu_ps(dst.wrapping_add(16), lanes(0, n - 16), _mm512_permutex2var_ps(ev, hi, od));
            }
        }
    }

    /// [`super::grad_block`] for one tile, 16 output channels at a time: four gathers (a plane
    /// apart) per 16 channels, 16 contiguous stores (the scalar loop's loads a plane apart and
    /// its stores 4 KB-aliased per ξ cost more than the products).
    ///
    /// # Safety
    /// The CPU has AVX-512F; `p` points at the tile's top-left output of channel 0 in an image's
    /// `(Cout, H, W)` gradient; `z` holds `16·zs` floats; `cout` is a multiple of 64.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn grad_tile(
        p: *const f32,
        plane: usize,
        w: usize,
        dx: bool,
        dy: bool,
        cout: usize,
        z: *mut f32,
        zs: usize,
        tp: usize,
        t: usize,
    ) {
        assert!(
            15 * plane <= i32::MAX as usize,
            "winograd: plane too large for 32-bit gather offsets"
        );
        let idx = idx(|l| l * plane as i32);
        let zero = _mm512_setzero_ps();
        for o0 in (0..cout).step_by(16) {
            let q = p.add(o0 * plane);
            let g00 = _mm512_i32gather_ps::<4>(idx, q.cast());
            let g01 = if dx { _mm512_i32gather_ps::<4>(idx, q.add(1).cast()) } else { zero };
            let g10 = if dy { _mm512_i32gather_ps::<4>(idx, q.add(w).cast()) } else { zero };
            let g11 = if dx && dy {
                _mm512_i32gather_ps::<4>(idx, q.add(w + 1).cast())
            } else {
                zero
            };
            let a = |p: __m512, q: __m512| [p, _mm512_add_ps(p, q), _mm512_sub_ps(p, q), _mm512_sub_ps(zero, q)];
            let (r0, r1) = (a(g00, g01), a(g10, g11));
            let base = z.add((o0 / super::WV) * tp * super::WV + t * super::WV + o0 % super::WV);
            for j in 0..4 {
                _mm512_storeu_ps(base.add(j * zs), r0[j]);
                _mm512_storeu_ps(base.add((4 + j) * zs), _mm512_add_ps(r0[j], r1[j]));
                _mm512_storeu_ps(base.add((8 + j) * zs), _mm512_sub_ps(r0[j], r1[j]));
                _mm512_storeu_ps(base.add((12 + j) * zs), _mm512_sub_ps(zero, r1[j]));
            }
        }
    }
}

/// How a convolution's 2×2 output tiles are cut into blocks of whole tile rows.
struct Tiling {
    /// Plane height and width.
    h: usize,
    w: usize,
    /// Tile rows per image, tiles per row.
    th: usize,
    tw: usize,
    /// Tile rows over all images, and per block.
    rows: usize,
    rb: usize,
    /// A block's tiles rounded up to whole panels of the 8×32 tile.
    tp: usize,
    /// Distance between `V` / `M` rows: `tp`, plus one cache line when that is a multiple of
    /// 128 floats (rows 512 bytes apart crowd a few L1 sets and stall the microkernel's `B`
    /// loads).
    ld: usize,
}

impl Tiling {
    /// Blocks of about [`BLOCK_TILES`] tiles, or (`whole`) one block of every tile row.
    fn new(g: &ConvGeom, whole: bool) -> Self {
        let (th, tw) = (g.h.div_ceil(2), g.w.div_ceil(2));
        let rows = g.n * th;
        let rb = if whole { rows } else { (BLOCK_TILES / tw).max(1) };
        let tp = (rb * tw).next_multiple_of(NR);
        let ld = if tp.is_multiple_of(128) { tp + 16 } else { tp };
        Self {
            h: g.h,
            w: g.w,
            th,
            tw,
            rows,
            rb,
            tp,
            ld,
        }
    }

    fn blocks(&self) -> usize {
        self.rows.div_ceil(self.rb)
    }

    /// Block `b`.
    fn block(&self, b: usize) -> Block {
        Block {
            h: self.h,
            w: self.w,
            th: self.th,
            tw: self.tw,
            rows: b * self.rb..((b + 1) * self.rb).min(self.rows),
            ld: self.ld,
        }
    }
}

/// A block of tile rows of a convolution's tiles.
struct Block {
    /// Plane height and width.
    h: usize,
    w: usize,
    /// Tile rows per image, tiles per row.
    th: usize,
    tw: usize,
    /// The block's tile rows (over all images: row `r` is image `r / th`, tile row `r % th`).
    rows: std::ops::Range<usize>,
    /// Distance between `V` / `M` rows ([`Tiling::ld`]).
    ld: usize,
}

/// Channels `chans` of `x (N, C, H, W)` into the block's `V (16·C rows, ld apart)`.
///
/// # Safety
/// `v` holds `16·C·ld` floats, and no other thread writes these channels' rows.
unsafe fn input_block(x: &[f32], c: usize, chans: Range<usize>, blk: &Block, v: *mut f32, fast: bool) {
    let (h, w, th, tw, ld) = (blk.h, blk.w, blk.th, blk.tw, blk.ld);
    assert!(blk.rows.len() * tw <= ld && chans.end <= c, "winograd: V too small");
    let (plane, _) = (h * w, fast); // `fast` unread off x86-64
    for ci in chans {
        for r in blk.rows.clone() {
            let (img, ty) = (r / th, r % th);
            let xp = &x[(img * c + ci) * plane..][..plane];
            let vr = v.add(ci * ld + (r - blk.rows.start) * tw);
            #[cfg(target_arch = "x86_64")]
            if fast {
                avx512::input_row(xp, h, w, ty, tw, vr, c * ld);
                continue;
            }
            input_row(xp, h, w, ty, tw, vr, c * ld);
        }
    }
}

/// Output channels `outs` of the block's `M (16·Cout rows, ld apart)` into `y (N, Cout, H, W)`.
///
/// # Safety
/// `y` holds `N·Cout·H·W` floats, and no other thread writes these channels of this block's
/// tile rows.
unsafe fn output_block(m: &[f32], cout: usize, outs: Range<usize>, blk: &Block, y: *mut f32, fast: bool) {
    let (h, w, th, tw, ld) = (blk.h, blk.w, blk.th, blk.tw, blk.ld);
    assert!(
        m.len() >= XI * cout * ld && blk.rows.len() * tw <= ld && outs.end <= cout,
        "winograd: M too small"
    );
    let (plane, _) = (h * w, fast); // `fast` unread off x86-64
    for o in outs {
        for r in blk.rows.clone() {
            let (img, ty) = (r / th, r % th);
            let yo = y.add((img * cout + o) * plane);
            let mr = m.as_ptr().add(o * ld + (r - blk.rows.start) * tw);
            #[cfg(target_arch = "x86_64")]
            if fast {
                avx512::output_row(mr, cout * ld, tw, ty, h, w, yo);
                continue;
            }
            output_row(mr, cout * ld, tw, ty, h, w, yo);
        }
    }
}

/// The 16 products of a block: `M[ξ] (Cout × tp, rows ld apart) = U[ξ] · V[ξ]`.
fn products(u: &PackedA, v: &[f32], c: usize, ld: usize, tp: usize, offs: &[usize], m: &mut [f32]) {
    packed::gemm::<NoPack>(u, tp, m, ld, false, BSource::Rows { base: &v[..c * ld], offs });
}

/// Tiles per block (its `V` and `M`: 16 rows of about this many floats per input and per
/// output channel): large enough for the products to run near peak, small enough for a
/// block's `V` and `M` to stay near L2 and for the small planes to make several blocks
/// (chosen with `examples/wino_probe.rs`, bench/README.md).
const BLOCK_TILES: usize = 128;

/// `y = conv(x, w)` for `x (N, C, H, W)`, `w (Cout, C, 3, 3)`, stride 1, padding 1 (see the
/// module docs); `y (N, Cout, H, W)`.
pub(super) fn conv3x3(x: &[f32], w: &[f32], g: ConvGeom, cout: usize) -> Vec<f32> {
    conv3x3_with(x, w, g, cout, packed::has_fast_kernel(), None)
}

/// [`conv3x3`] with the transforms' AVX-512 versions (`fast`, needs AVX-512F) or portable ones;
/// `whole` forces one block with parallel stages (`Some(true)`) or blocks (`Some(false)`)
/// instead of choosing by the block count (the tests reach both paths on any machine).
fn conv3x3_with(x: &[f32], w: &[f32], g: ConvGeom, cout: usize, fast: bool, whole: Option<bool>) -> Vec<f32> {
    debug_assert!(g.k == 3 && g.stride == 1 && g.pad == 1);
    let (n, c, h, wd) = (g.n, g.c, g.h, g.w);
    assert_eq!(x.len(), n * c * h * wd, "winograd: input size");
    assert_eq!(w.len(), cout * c * 9, "winograd: weight size");
    // Too few blocks to share between the threads (the deep layers' small planes): one block
    // of everything, each of its three stages split between the threads instead.
    let whole = whole.unwrap_or_else(|| Tiling::new(&g, false).blocks() < 2 * rayon::current_num_threads());
    let tiling = Tiling::new(&g, whole);
    let (tp, ld) = (tiling.tp, tiling.ld);
    let u = transform_weights(w, cout, c);
    let plane = h * wd;
    // SAFETY: the blocks cover every tile row of every image, and each tile row's output
    // transform writes output rows 2ty and 2ty + 1 (when inside) of every output channel.
    let mut y = unsafe { unwritten(n * cout * plane) };
    let yp = SendPtr(y.as_mut_ptr());
    let offs: Vec<usize> = (0..c).map(|ci| ci * ld).collect();
    // V (16·C rows, ld apart) 64-byte aligned: the kernel's B loads stay on lines.
    let new_v = || packed::aligned_zeros(XI * c * ld);
    if whole {
        let blk = tiling.block(0);
        let (mut v, v0) = new_v();
        let vp = SendPtr(v[v0..].as_mut_ptr());
        (0..c).into_par_iter().for_each(|ci| {
            #[allow(clippy::redundant_locals)] // capture the Send wrapper, not its raw field
            let vp = vp;
            // SAFETY: v holds 16·C·ld floats from v0; channel ci's rows are this task's.
            unsafe { input_block(x, c, ci..ci + 1, &blk, vp.0, fast) }
        });
        let v = &v[v0..v0 + XI * c * ld];
        let mut m = vec![0f32; XI * cout * ld];
        m.par_chunks_mut(cout * ld).zip(&u).enumerate().for_each(|(xi, (mx, ux))| {
            products(ux, &v[xi * c * ld..], c, ld, tp, &offs, mx);
        });
        (0..cout).into_par_iter().for_each(|o| {
            #[allow(clippy::redundant_locals)] // capture the Send wrapper, not its raw field
            let yp = yp;
            // SAFETY: y holds N·Cout·H·W floats; output channel o is this task's.
            unsafe { output_block(&m, cout, o..o + 1, &blk, yp.0, fast) }
        });
        return y;
    }
    (0..tiling.blocks()).into_par_iter().for_each_init(
        || (new_v(), vec![0f32; XI * cout * ld]),
        |((v, v0), m), b| {
            #[allow(clippy::redundant_locals)] // capture the Send wrapper, not its raw field
            let yp = yp;
            let blk = tiling.block(b);
            let v = &mut v[*v0..*v0 + XI * c * ld];
            // SAFETY: v holds 16·C·ld floats and is this task's.
            unsafe { input_block(x, c, 0..c, &blk, v.as_mut_ptr(), fast) };
            for (xi, ux) in u.iter().enumerate() {
                products(ux, &v[xi * c * ld..], c, ld, tp, &offs, &mut m[xi * cout * ld..][..cout * ld]);
            }
            // SAFETY: y holds N·Cout·H·W floats; only this block writes its tile rows.
            unsafe { output_block(m, cout, 0..cout, &blk, yp.0, fast) };
        },
    );
    y
}

/// `Z[ξ]` of one tile, `(A gy Aᵀ)[ξ]` for its 2×2 output gradient `[g00, g01; g10, g11]`
/// (`A = [1 0; 1 1; 1 −1; 0 −1]`).
#[inline(always)]
fn grad_tile(g00: f32, g01: f32, g10: f32, g11: f32) -> [f32; XI] {
    let a = |p: f32, q: f32| [p, p + q, p - q, -q];
    let (r0, r1) = (a(g00, g01), a(g10, g11));
    let mut z = [0f32; XI];
    for j in 0..4 {
        z[j] = r0[j];
        z[4 + j] = r0[j] + r1[j];
        z[8 + j] = r0[j] - r1[j];
        z[12 + j] = -r1[j];
    }
    z
}

/// The block's `Z[ξ]` of `gy (N, Cout, H, W)` in 64-channel panels for the wide tile:
/// `z[ξ·zs + pn·tp·64 + t·64 + v] = Z[ξ][pn·64 + v][t]` (`zs = Cout·tp`), output channels
/// innermost, so consecutive channels' values land side by side.
fn grad_block(gy: &[f32], cout: usize, blk: &Block, tp: usize, z: &mut [f32], fast: bool) {
    let (h, w, th, tw) = (blk.h, blk.w, blk.th, blk.tw);
    let (plane, zs, _) = (h * w, cout * tp, fast); // `fast` unread off x86-64
    assert!(
        z.len() >= XI * zs && blk.rows.len() * tw <= tp && cout.is_multiple_of(WV),
        "winograd: Z too small"
    );
    for r in blk.rows.clone() {
        let (img, ty) = (r / th, r % th);
        let gi = &gy[img * cout * plane..][..cout * plane];
        for tx in 0..tw {
            let t = (r - blk.rows.start) * tw + tx;
            let (oy, ox) = (2 * ty, 2 * tx);
            let (dy, dx) = (oy + 1 < h, ox + 1 < w);
            let at = oy * w + ox;
            #[cfg(target_arch = "x86_64")]
            if fast {
                // SAFETY: AVX-512F is there (`fast`); the tile's pixels (dx, dy say which
                // exist) of every channel are inside gi; z holds 16·zs floats (asserted).
                unsafe { avx512::grad_tile(gi.as_ptr().add(at), plane, w, dx, dy, cout, z.as_mut_ptr(), zs, tp, t) };
                continue;
            }
            for o in 0..cout {
                let p = &gi[o * plane + at..];
                let zz = grad_tile(
                    p[0],
                    if dx { p[1] } else { 0.0 },
                    if dy { p[w] } else { 0.0 },
                    if dx && dy { p[w + 1] } else { 0.0 },
                );
                let base = (o / WV) * tp * WV + t * WV + o % WV;
                for (xi, v) in zz.into_iter().enumerate() {
                    z[xi * zs + base] = v;
                }
            }
        }
    }
}

/// Blocks' partial sums are added in this many fixed chunks (in order), whatever the thread
/// count: the same bits on any machine.
const GW_CHUNKS: usize = 8;

/// The weight gradient of a 3×3 stride-1 padding-1 convolution, `gW (Cout, C, 3, 3)`, by
/// Winograd F(3×3, 2×2) (the transpose of the forward's algorithm): for every 2×2 tile of the
/// output gradient and its 4×4 input patch, `gW[o][c] += Gᵀ [(A gy Aᵀ) ⊙ (Bᵀ d B)] G`. The
/// sum over tiles runs in the transformed domain — 16 products `S[ξ] (C × Cout) = V[ξ] ·
/// Z[ξ]ᵀ` over the tiles, on the wide tile ([`wide_gw`]: `Z` in 64-channel
/// panels, `V`'s rows read in place) — and `G` is applied once at the end. `Cout` must be a
/// multiple of 64.
pub(super) fn grad_weight(x: &[f32], gy: &[f32], g: ConvGeom, cout: usize) -> Vec<f32> {
    grad_weight_with(x, gy, g, cout, packed::has_fast_kernel())
}

/// [`grad_weight`] with the transforms' AVX-512 versions (`fast`, needs AVX-512F) or portable
/// ones.
fn grad_weight_with(x: &[f32], gy: &[f32], g: ConvGeom, cout: usize, fast: bool) -> Vec<f32> {
    debug_assert!(g.k == 3 && g.stride == 1 && g.pad == 1);
    let (n, c, h, wd) = (g.n, g.c, g.h, g.w);
    assert!(
        cout > 0 && cout.is_multiple_of(WV),
        "winograd: grad_weight needs whole 64-channel panels"
    );
    assert_eq!(x.len(), n * c * h * wd, "winograd: input size");
    assert_eq!(gy.len(), n * cout * h * wd, "winograd: gradient size");
    let tiling = Tiling::new(&g, false);
    let (tp, ld, nblocks) = (tiling.tp, tiling.ld, tiling.blocks());
    let chunks = GW_CHUNKS.min(nblocks);
    let ss = c * cout;
    let partial: Vec<Vec<f32>> = (0..chunks)
        .into_par_iter()
        .map(|ch| {
            let (mut v, v0) = packed::aligned_zeros(XI * c * ld);
            let v = &mut v[v0..v0 + XI * c * ld];
            let mut z = vec![0f32; XI * cout * tp];
            let mut s = vec![0f32; XI * ss];
            for b in (ch * nblocks / chunks)..((ch + 1) * nblocks / chunks) {
                let blk = tiling.block(b);
                let nt = blk.rows.len() * blk.tw;
                // SAFETY: v holds 16·C·ld floats and is this task's.
                unsafe { input_block(x, c, 0..c, &blk, v.as_mut_ptr(), fast) };
                grad_block(gy, cout, &blk, tp, &mut z, fast);
                for xi in 0..XI {
                    wide_gw(
                        &mut s[xi * ss..][..ss],
                        cout,
                        c,
                        |ci| ci * ld,
                        &v[xi * c * ld..][..c * ld],
                        &z[xi * cout * tp..][..cout * tp],
                        tp * WV,
                        nt,
                    );
                }
            }
            s
        })
        .collect();
    let mut s = vec![0f32; XI * ss];
    for p in &partial {
        s.iter_mut().zip(p).for_each(|(a, b)| *a += b);
    }
    // gW[o][c] = Gᵀ S G, S[ξ][c][o]; Gᵀ = [1 ½ ½ 0; 0 ½ −½ 0; 0 ½ ½ 1].
    let gt = |q: [f32; 4]| [q[0] + 0.5 * (q[1] + q[2]), 0.5 * (q[1] - q[2]), 0.5 * (q[1] + q[2]) + q[3]];
    let mut gw = vec![0f32; cout * c * 9];
    gw.par_chunks_mut(c * 9).enumerate().for_each(|(o, go)| {
        for ci in 0..c {
            let at = |xi: usize| s[xi * ss + ci * cout + o];
            // Down the columns j, then across.
            let cols: [[f32; 3]; 4] = std::array::from_fn(|j| gt([at(j), at(4 + j), at(8 + j), at(12 + j)]));
            for a in 0..3 {
                let row = gt(cols.map(|col| col[a]));
                go[ci * 9 + a * 3..][..3].copy_from_slice(&row);
            }
        }
    });
    gw
}

#[cfg(test)]
mod tests {
    use super::super::reference;
    use super::*;
    use crate::devcheck::max_abs_diff;

    /// A deterministic stream of values in [−1, 1).
    fn values(seed: u64) -> impl FnMut(usize) -> Vec<f32> {
        let mut state = seed;
        move |len| {
            (0..len)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
                })
                .collect()
        }
    }

    /// The 3×3 stride-1 padding-1 geometry.
    fn geom(n: usize, c: usize, h: usize, w: usize) -> ConvGeom {
        ConvGeom {
            n,
            c,
            h,
            w,
            k: 3,
            stride: 1,
            pad: 1,
        }
    }

    /// max |got − want| over max |want| (a NaN counts as infinite).
    fn rel_err(got: &[f32], want: &[f64]) -> f64 {
        let w32: Vec<f32> = want.iter().map(|&v| v as f32).collect();
        let scale = want.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-6);
        max_abs_diff(got, &w32) as f64 / scale
    }

    #[test]
    fn weight_gradient_matches_the_direct_sum() {
        let mut vals = values(11);
        // Odd sides (clipped tiles), 1-pixel planes, channel counts not a multiple of the
        // tile's 6 rows, several blocks and chunks (2 × 33 rows of 16-tile rows).
        for &(n, c, h, w, cout) in &[
            (1, 1, 1, 1, 64),
            (2, 5, 5, 7, 64),
            (3, 7, 8, 8, 128),
            (2, 3, 66, 31, 64),
            (1, 2, 4, 67, 64),
        ] {
            let g = geom(n, c, h, w);
            let (x, gy) = (vals(n * c * h * w), vals(n * cout * h * w));
            let want = reference::grad_weight(&x, &gy, &g, cout);
            // The portable transforms everywhere, the AVX-512 ones where the CPU has them.
            for fast in [false, packed::has_fast_kernel()] {
                let err = rel_err(&grad_weight_with(&x, &gy, g, cout, fast), &want);
                assert!(
                    err < 2e-6 * ((n * h * w) as f64).sqrt(),
                    "{n}x{c}x{h}x{w} -> {cout} (fast {fast}): relative error {err:e}"
                );
            }
        }
    }

    /// The blocks' sums are added in fixed chunks: the same bits on 1, 2 or 3 threads.
    #[test]
    fn weight_gradient_bits_do_not_depend_on_threads() {
        let mut vals = values(13);
        let (g, cout) = (geom(2, 6, 66, 31), 64);
        let (x, gy) = (vals(2 * 6 * 66 * 31), vals(2 * cout * 66 * 31));
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| grad_weight(&x, &gy, g, cout))
        };
        let one = run(1);
        for threads in [2, 3] {
            let got = run(threads);
            assert!(one.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()), "{threads} threads");
        }
    }

    #[test]
    fn matches_the_direct_convolution_on_odd_and_even_shapes() {
        let mut vals = values(7);
        // (n, c, h, w, cout): odd and even sides, 1-pixel planes, ragged channel counts, tile
        // rows spanning images, several blocks, rows of more than 16 tiles (two 16-tile chunks
        // of the AVX-512 transforms).
        for &(n, c, h, w, cout) in &[
            (1, 1, 1, 1, 1),
            (2, 3, 5, 7, 5),
            (3, 5, 4, 4, 8),
            (2, 16, 9, 6, 13),
            (4, 64, 8, 8, 64),
            (2, 8, 33, 31, 16),
            (9, 24, 4, 4, 40),
            (2, 3, 6, 65, 8),
        ] {
            let g = geom(n, c, h, w);
            let (x, wt) = (vals(n * c * h * w), vals(cout * c * 9));
            let want = reference::forward(&x, &wt, &g, cout);
            // Blocks and one whole block with parallel stages, whatever the thread count.
            for fast in [false, packed::has_fast_kernel()] {
                for whole in [false, true] {
                    let err = rel_err(&conv3x3_with(&x, &wt, g, cout, fast, Some(whole)), &want);
                    let what = format!("{n}x{c}x{h}x{w} -> {cout} (fast {fast}, whole {whole})");
                    assert!(err < 2e-6 * (c as f64 * 9.0).sqrt(), "{what}: relative error {err:e}");
                }
            }
        }
    }
}
