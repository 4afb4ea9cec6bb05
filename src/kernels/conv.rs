//! 2-D convolution on CPU, one autograd node, three passes. Two own AVX-512 microkernels
//! ([`packed`]: the 8×32 tile, and the 6×64 "wide" tile — 64 output channels as aligned
//! vector loads, six positions or taps broadcast from rows read in place) and the `gemm`
//! crate share the work:
//!
//! - 3×3 stride-1 padding-1 convolutions with H·W ≥ 64 and 64+ channels in and out, with
//!   AVX-512: forward and grad-input by Winograd F(2×2, 3×3) ([`winograd`], 2.25x fewer
//!   multiplies); the weight gradient too when H·W ≥ 256 and the wide tile's conditions hold
//!   (Cout a multiple of 64, C·9 ≥ 64).
//! - Other stride-1 convolutions on planes of 256+ outputs (ResNet's 32×32 and 16×16 layers), when
//!   the CPU has AVX-512: forward and grad-input as an implicit GEMM ([`conv_implicit`]: the
//!   rows of the column matrix are read in place from a zero-padded image; grad-input is the
//!   stride-1 convolution of gY with the flipped weight), on the wide tile when the output
//!   channels are a multiple of 64, else on the 8×32 tile.
//! - Otherwise im2col + GEMM (the `gemm` crate) in blocks of ~128 columns (row bands of a large
//!   plane, several images of a small one, [`blocking`]) into a buffer that stays in cache;
//!   grad-input `col2im(Wᵀ · gY)` with a stored `Wᵀ`.
//! - Weight gradient `gWᵀ = cols · gYᵀ`, the taps split across tasks ([`conv_grad_weight_cpu`]):
//!   implicit on the wide tile for stride-1 planes of 512+ outputs
//!   ([`conv_grad_weight_implicit`]), the wide tile over the im2col columns for the other 3×3
//!   layers with 64-channel multiples, the `gemm` crate for the rest.
//!
//! Nothing of the size of the whole batch's column matrix is ever allocated, and autograd sees
//! one node (a batch-wide im2col node made candle allocate, zero and add a 9×-activation
//! gradient).

use super::f32_slice;
use super::packed::{self, BSource, NoPack, PackedA, NR, WR, WV};
use super::winograd;
use candle_core::{CpuStorage, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;
use std::ops::Range;

/// Geometry of a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeom {
    /// Batch.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Kernel side.
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding.
    pub pad: usize,
}

impl ConvGeom {
    /// Output height.
    pub fn ho(&self) -> usize {
        (self.h + 2 * self.pad - self.k) / self.stride + 1
    }
    /// Output width.
    pub fn wo(&self) -> usize {
        (self.w + 2 * self.pad - self.k) / self.stride + 1
    }
    fn row_len(&self) -> usize {
        self.c * self.k * self.k
    }
}

/// Valid output range `[lo, hi)` along one axis for kernel offset `kk`: the outputs whose
/// input coordinate `o·stride + kk − pad` falls inside `[0, size)`.
fn valid_range(size: usize, out: usize, kk: usize, g: &ConvGeom) -> (usize, usize) {
    let (s, p) = (g.stride as isize, g.pad as isize);
    let lo = ((p - kk as isize + s - 1).max(0) / s) as usize;
    // Floor division: `size − 1 + p − kk` can be negative (a 1×1 input to a 3×3 tap).
    let hi = ((size as isize - 1 + p - kk as isize).div_euclid(s) + 1).max(0) as usize;
    let hi = hi.min(out);
    (lo.min(hi), hi)
}

/// A stride-1 convolution whose output rows are as wide as its input rows (padding
/// `(k − 1)/2`): tap `(c, ky, kx)`'s row of the column matrix over output rows `[oy0, oy1)` is
/// then one contiguous run of the input plane, shifted by `(ky − pad)·W + kx − pad`, with the
/// entries that wrap across a row edge (or fall off the plane) zero.
fn same_width(g: &ConvGeom) -> bool {
    g.stride == 1 && 2 * g.pad + 1 == g.k && SHIFTED_RUNS.load(std::sync::atomic::Ordering::Relaxed)
}

static SHIFTED_RUNS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Turn the shifted-run im2col / col2im of [`same_width`] convolutions off (the row-by-row
/// copies then run), process-wide, for `examples/conv_ab.rs`'s A/B. Benchmarks only.
#[doc(hidden)]
pub fn set_shifted_runs(on: bool) {
    SHIFTED_RUNS.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Where tap `j`'s row of the column matrix (output rows `[oy0, oy1)`, `(oy1 − oy0)·W` entries)
/// comes from in its channel's plane, for [`same_width`] convolutions.
struct ShiftedSpan {
    /// Entries of the row that copy the plane; the rest are zero.
    dst: Range<usize>,
    /// The plane's entries they copy (same length).
    src: Range<usize>,
    /// Column shift `kx − pad`: inside `dst`, columns that wrap across a row edge are zero.
    dx: isize,
    w: usize,
}

impl ShiftedSpan {
    /// Each index of `dst` that wrapped across a row edge (its value must be zero).
    fn for_each_edge(&self, mut f: impl FnMut(usize)) {
        let (w, dx) = (self.w as isize, self.dx);
        if dx == 0 {
            return;
        }
        // Columns ox with ox + dx outside [0, W): the last dx (dx > 0) or the first −dx.
        let (lo, hi) = if dx > 0 { (w - dx, w) } else { (0, -dx) };
        let row0 = self.dst.start / self.w;
        for row in row0.. {
            let base = (row * self.w) as isize;
            if base >= self.dst.end as isize {
                break;
            }
            for ox in lo.max(0)..hi.min(w) {
                let i = base + ox;
                if i >= self.dst.start as isize && i < self.dst.end as isize {
                    f(i as usize);
                }
            }
        }
    }
}

/// The [`ShiftedSpan`] of the taps `(·, ky, kx)` (the same for every channel).
fn shifted_span_at(g: &ConvGeom, ky: usize, kx: usize, oy0: usize, oy1: usize) -> ShiftedSpan {
    let (w, hw) = (g.w as isize, (g.h * g.w) as isize);
    let dy = ky as isize - g.pad as isize;
    let dx = kx as isize - g.pad as isize;
    // Row entry i (output position oy0·W + i) reads plane entry oy0·W + i + dy·W + dx; keep the
    // i for which that is inside the plane and the output row inside [oy0, oy1).
    let shift = (oy0 as isize + dy) * w + dx;
    let len = ((oy1 - oy0) * g.w) as isize;
    let lo = (-shift).clamp(0, len);
    let hi = (hw - shift).clamp(lo, len);
    // An empty run (the tap misses the plane for every row of the band) copies nothing.
    let src = if hi > lo {
        (lo + shift) as usize..(hi + shift) as usize
    } else {
        0..0
    };
    ShiftedSpan {
        dst: lo as usize..hi as usize,
        src,
        dx,
        w: g.w,
    }
}

/// Taps `taps` (rows of the column matrix, in the weight's (c, ky, kx) order) and output rows
/// `[oy0, oy1)` of one image's im2col into `cols` `(taps.len(), (oy1−oy0)·Wo)`, rows `ld`
/// apart (several images of a block sit side by side, each starting at its own offset).
/// Every entry is written (zeros for the padding taps), so the buffer needs no clearing.
/// Same-width convolutions ([`same_width`]) copy each tap's row as one shifted run of the
/// plane and zero its wrapped edge columns: the deep layers' 8- and 4-pixel rows made the
/// row-by-row copies ~25% of their forward (`examples/conv_ab.rs`: the three passes of all 20
/// convolutions 8–15% faster with the runs).
fn im2col_rows(x: &[f32], g: &ConvGeom, taps: Range<usize>, oy0: usize, oy1: usize, cols: &mut [f32], ld: usize) {
    let wo = g.wo();
    let hw = g.h * g.w;
    let t0 = taps.start;
    if same_width(g) {
        return im2col_runs(x, 1, g, taps, oy0, oy1, cols, ld);
    }
    for j in taps {
        let (c, ky, kx) = (j / (g.k * g.k), (j / g.k) % g.k, j % g.k);
        let (vy0, vy1) = valid_range(g.h, g.ho(), ky, g);
        let (ox0, ox1) = valid_range(g.w, wo, kx, g);
        let xc = &x[c * hw..(c + 1) * hw];
        for oy in oy0..oy1 {
            let d = &mut cols[(j - t0) * ld + (oy - oy0) * wo..][..wo];
            if oy < vy0 || oy >= vy1 {
                d.fill(0.0);
                continue;
            }
            let iy = oy * g.stride + ky - g.pad;
            let src = &xc[iy * g.w..(iy + 1) * g.w];
            d[..ox0].fill(0.0);
            d[ox1..].fill(0.0);
            if g.stride == 1 {
                let ix0 = ox0 + kx - g.pad;
                d[ox0..ox1].copy_from_slice(&src[ix0..ix0 + (ox1 - ox0)]);
            } else {
                for ox in ox0..ox1 {
                    d[ox] = src[ox * g.stride + kx - g.pad];
                }
            }
        }
    }
}

/// [`im2col_rows`] of a [`same_width`] convolution for `nb` images at once (image `b` at
/// `x[b·C·H·W..]`, its columns at `cols[b·band..]`, band = `(oy1 − oy0)·W`): each tap's shifted
/// run and wrapped edge entries are worked out once for all the images (the deep layers' blocks
/// hold 2–16 images, runs of 16–64 floats each), taps walked without divisions.
#[allow(clippy::too_many_arguments)]
fn im2col_runs(x: &[f32], nb: usize, g: &ConvGeom, taps: Range<usize>, oy0: usize, oy1: usize, cols: &mut [f32], ld: usize) {
    let hw = g.h * g.w;
    let (chw, band) = (g.c * hw, (oy1 - oy0) * g.w);
    let t0 = taps.start;
    debug_assert!(nb <= 1 || ld >= nb * band, "im2col_runs: images' columns overlap");
    for_each_tap_run(g, taps, oy0, oy1, |j, c, span, edges| {
        for b in 0..nb {
            let d = &mut cols[(j - t0) * ld + b * band..][..band];
            d[..span.dst.start].fill(0.0);
            d[span.dst.end..].fill(0.0);
            d[span.dst.clone()].copy_from_slice(&x[b * chw + c * hw..][span.src.clone()]);
            for &i in edges {
                d[i] = 0.0;
            }
        }
    });
}

/// The taps `taps` of a [`same_width`] convolution in order, `f(j, c, span, edges)`: each with
/// its channel, its [`ShiftedSpan`] over output rows `[oy0, oy1)` and the indices of its
/// wrapped edge entries, worked out once per tap whatever the number of images (im2col and
/// col2im of a block), taps walked without divisions.
fn for_each_tap_run(g: &ConvGeom, taps: Range<usize>, oy0: usize, oy1: usize, mut f: impl FnMut(usize, usize, &ShiftedSpan, &[usize])) {
    let (k, t0) = (g.k, taps.start);
    let (mut c, mut ky, mut kx) = (t0 / (k * k), (t0 / k) % k, t0 % k);
    let mut edges = Vec::new();
    for j in taps {
        let span = shifted_span_at(g, ky, kx, oy0, oy1);
        edges.clear();
        span.for_each_edge(|i| edges.push(i));
        f(j, c, &span, &edges);
        kx += 1;
        if kx == k {
            (kx, ky) = (0, ky + 1);
            if ky == k {
                (ky, c) = (0, c + 1);
            }
        }
    }
}

/// Adjoint of [`im2col_rows`]: adds `cols` `(C·k·k, (oy1−oy0)·Wo)` (rows `ld` apart) into one
/// image's `gx` `(C, H, W)`. `cols` is scratch: on the same-width path its entries that fall
/// in the padding are zeroed first.
fn col2im_rows(cols: &mut [f32], g: &ConvGeom, oy0: usize, oy1: usize, gx: &mut [f32], ld: usize) {
    let wo = g.wo();
    let hw = g.h * g.w;
    if same_width(g) {
        return col2im_runs(cols, 1, g, oy0, oy1, gx, ld);
    }
    for j in 0..g.row_len() {
        let (c, ky, kx) = (j / (g.k * g.k), (j / g.k) % g.k, j % g.k);
        let (vy0, vy1) = valid_range(g.h, g.ho(), ky, g);
        let (ox0, ox1) = valid_range(g.w, wo, kx, g);
        let xc = &mut gx[c * hw..(c + 1) * hw];
        for oy in oy0.max(vy0)..oy1.min(vy1) {
            let iy = oy * g.stride + ky - g.pad;
            let s = &cols[j * ld + (oy - oy0) * wo..][..wo];
            let d = &mut xc[iy * g.w..(iy + 1) * g.w];
            if g.stride == 1 {
                let ix0 = ox0 + kx - g.pad;
                for (dv, sv) in d[ix0..ix0 + (ox1 - ox0)].iter_mut().zip(&s[ox0..ox1]) {
                    *dv += sv;
                }
            } else {
                for ox in ox0..ox1 {
                    d[ox * g.stride + kx - g.pad] += s[ox];
                }
            }
        }
    }
}

/// [`col2im_rows`] of a [`same_width`] convolution for `nb` images at once (image `b`'s columns
/// at `cols[b·band..]`, its gradient at `gx[b·C·H·W..]`), each tap's run worked out once.
#[allow(clippy::too_many_arguments)]
fn col2im_runs(cols: &mut [f32], nb: usize, g: &ConvGeom, oy0: usize, oy1: usize, gx: &mut [f32], ld: usize) {
    let hw = g.h * g.w;
    let (chw, band) = (g.c * hw, (oy1 - oy0) * g.w);
    debug_assert!(nb <= 1 || ld >= nb * band, "col2im_runs: images' columns overlap");
    for_each_tap_run(g, 0..g.row_len(), oy0, oy1, |j, c, span, edges| {
        for b in 0..nb {
            let row = &mut cols[j * ld + b * band..];
            // The span also covers the row-edge entries a shifted tap wraps onto (the next or
            // previous row's pixel): they belong to the padding, so drop them (the columns
            // are scratch) and add the span in one run.
            for &i in edges {
                row[i] = 0.0;
            }
            for (dv, sv) in gx[b * chw + c * hw..][span.src.clone()].iter_mut().zip(&row[span.dst.clone()]) {
                *dv += sv;
            }
        }
    });
}

/// A 1×1, stride-1, unpadded convolution reads the image itself as its column matrix.
fn is_pointwise(g: &ConvGeom) -> bool {
    g.k == 1 && g.stride == 1 && g.pad == 0
}

/// Output columns per GEMM to aim for (forward and grad-input on the im2col path; the weight
/// gradient's blocks use [`TARGET_GW_COLS`]). Chosen with `examples/conv_ab.rs` (all 20
/// convolutions, widths interleaved in one process): 128 ran the three passes 0–10% faster
/// than 256 and 10–25% faster than 1,024 (whole 32×32 images, whose column matrix outgrows
/// L2); the deep layers' 8×8 / 4×4 planes batch several images per GEMM.
fn target_cols() -> usize {
    TARGET_COLS.load(std::sync::atomic::Ordering::Relaxed)
}

static TARGET_COLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(128);
static TARGET_GW_COLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(256);

/// Override the GEMM widths (forward and grad-input; the weight gradient's inner dimension),
/// process-wide, for `examples/conv_ab.rs`, which measures them. Benchmarks only: the weight
/// gradient's bits depend on its block width.
#[doc(hidden)]
pub fn set_target_cols(n: usize, gw: usize) {
    TARGET_COLS.store(n.max(1), std::sync::atomic::Ordering::Relaxed);
    TARGET_GW_COLS.store(gw.max(1), std::sync::atomic::Ordering::Relaxed);
}

/// How a convolution's output columns are cut into GEMMs: `imgs` whole images side by side
/// when one image's plane is narrow, else one image in bands of `rows` output rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Blocking {
    imgs: usize,
    rows: usize,
}

fn blocking(g: &ConvGeom) -> Blocking {
    blocking_for(g, target_cols())
}

fn blocking_for(g: &ConvGeom, target: usize) -> Blocking {
    let (ho, wo) = (g.ho(), g.wo());
    if ho * wo >= target {
        Blocking {
            imgs: 1,
            rows: (target / wo).clamp(1, ho),
        }
    } else {
        Blocking {
            imgs: target.div_ceil(ho * wo).clamp(1, g.n.max(1)),
            rows: ho,
        }
    }
}

/// Taps `taps` of the column matrix of images `i0..i0+nb`, output rows `[oy0, oy1)`, and its
/// row stride: the image itself for a single pointwise image, else im2col into `buf`.
#[allow(clippy::too_many_arguments)]
fn columns<'a>(
    buf: &'a mut [f32],
    x: &'a [f32],
    g: &ConvGeom,
    taps: Range<usize>,
    i0: usize,
    nb: usize,
    oy0: usize,
    oy1: usize,
) -> (&'a [f32], usize) {
    let (chw, wo, plane) = (g.c * g.h * g.w, g.wo(), g.ho() * g.wo());
    if nb == 1 && is_pointwise(g) {
        return (&x[i0 * chw + taps.start * plane + oy0 * wo..(i0 + 1) * chw], plane);
    }
    let band = (oy1 - oy0) * wo;
    let ld = nb * band;
    if same_width(g) {
        im2col_runs(&x[i0 * chw..(i0 + nb) * chw], nb, g, taps.clone(), oy0, oy1, buf, ld);
    } else {
        for j in 0..nb {
            let i = i0 + j;
            im2col_rows(&x[i * chw..(i + 1) * chw], g, taps.clone(), oy0, oy1, &mut buf[j * band..], ld);
        }
    }
    (&buf[..taps.len() * ld], ld)
}

/// Copy images `i0..i0+b` of an NCHW tensor with `ch` channels into a `(ch, b·plane)` block.
fn gather(t: &[f32], ch: usize, plane: usize, i0: usize, b: usize, block: &mut [f32]) {
    for j in 0..b {
        for c in 0..ch {
            let src = &t[((i0 + j) * ch + c) * plane..][..plane];
            block[c * b * plane + j * plane..][..plane].copy_from_slice(src);
        }
    }
}

/// The inverse of [`gather`]: a `(ch, b·plane)` block into images `0..b` of `t` (NCHW).
fn scatter(block: &[f32], ch: usize, plane: usize, b: usize, t: &mut [f32]) {
    for j in 0..b {
        for c in 0..ch {
            t[(j * ch + c) * plane..][..plane].copy_from_slice(&block[c * b * plane + j * plane..][..plane]);
        }
    }
}

/// `(rows, cols)` row-major → its transpose.
fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; a.len()];
    transpose_add(a, rows, cols, &mut t, rows, 0);
    t
}

/// `out[c·ldo + col0 + r] += a[r·cols + c]` for the `(rows, cols)` row-major `a`: a transpose
/// added into columns `col0..col0+rows` of `out`, in 32×32 tiles (a plain loop strides through
/// memory on one side and ran ~10 ms for a 512×4608 weight), rows of `out` in parallel.
fn transpose_add(a: &[f32], rows: usize, cols: usize, out: &mut [f32], ldo: usize, col0: usize) {
    const T: usize = 32;
    out.par_chunks_mut(ldo * T)
        .take(cols.div_ceil(T))
        .enumerate()
        .for_each(|(cb, block)| {
            let c0 = cb * T;
            for r0 in (0..rows).step_by(T) {
                for c in c0..(c0 + T).min(cols) {
                    let dst = &mut block[(c - c0) * ldo + col0 + r0..];
                    for r in r0..(r0 + T).min(rows) {
                        dst[r - r0] += a[r * cols + c];
                    }
                }
            }
        });
}

/// Row-major `dst (m, n) = [dst +] lhs · rhs` into a `dst` whose rows are `ld` apart,
/// single-threaded (callers parallelise over images). Strides are `(row, col)` pairs so that
/// transposed operands need no copy.
#[allow(clippy::too_many_arguments)]
fn sgemm_ld(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    ld: usize,
    accumulate: bool,
    lhs: &[f32],
    lhs_rc: (usize, usize),
    rhs: &[f32],
    rhs_rc: (usize, usize),
) {
    sgemm_ld_par(m, n, k, dst, ld, accumulate, lhs, lhs_rc, rhs, rhs_rc, gemm::Parallelism::None)
}

/// [`sgemm_ld`] with gemm's own threading (`Parallelism::Rayon(n)` for one large product).
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm_ld_par(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    ld: usize,
    accumulate: bool,
    lhs: &[f32],
    lhs_rc: (usize, usize),
    rhs: &[f32],
    rhs_rc: (usize, usize),
    par: gemm::Parallelism,
) {
    assert!(m <= 1 || ld >= n, "rows of dst overlap");
    assert!(m == 0 || n == 0 || dst.len() >= (m - 1) * ld + n);
    assert!(m == 0 || k == 0 || lhs.len() > (m - 1) * lhs_rc.0 + (k - 1) * lhs_rc.1);
    assert!(k == 0 || n == 0 || rhs.len() > (k - 1) * rhs_rc.0 + (n - 1) * rhs_rc.1);
    // SAFETY: the bounds above hold for every index gemm touches; dst does not alias lhs/rhs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            ld as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_rc.1 as isize,
            lhs_rc.0 as isize,
            rhs.as_ptr(),
            rhs_rc.1 as isize,
            rhs_rc.0 as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// The blocks of one task, `(i0, nb, oy0, oy1)`: images `lo..hi` cut by `bl`.
fn blocks(lo: usize, hi: usize, ho: usize, bl: Blocking) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    (lo..hi).step_by(bl.imgs).flat_map(move |i0| {
        (0..ho)
            .step_by(bl.rows)
            .map(move |oy0| (i0, bl.imgs.min(hi - i0), oy0, (oy0 + bl.rows).min(ho)))
    })
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

/// `gYᵀ` of one image in 64-channel panels: `dst[pn·pstride + (oy·ld + ox)·64 + v] =
/// gy[pn·64 + v][oy][ox]` (`ld` ≥ `Wo`: the padded-width grid leaves its extra columns as they
/// were, zero).
fn panels_t(gyi: &[f32], cout: usize, ho: usize, wo: usize, ld: usize, dst: &mut [f32], pstride: usize) {
    let plane = ho * wo;
    for o in 0..cout {
        let (pn, v) = (o / WV, o % WV);
        for oy in 0..ho {
            let src = &gyi[o * plane + oy * wo..][..wo];
            let d = &mut dst[pn * pstride + oy * ld * WV + v..];
            for (ox, s) in src.iter().enumerate() {
                d[ox * WV] = *s;
            }
        }
    }
}

/// Stride-1 convolutions whose output plane has at least this many pixels run as an implicit
/// GEMM ([`conv_implicit`]); below it the padded-width grid wastes too much (a third at 4×4).
const IMPLICIT_MIN_PLANE: usize = 256;

static WIDE_FWD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Turn the wide-tile implicit convolution off (the 8×32 one then runs), process-wide, for
/// `examples/conv_ab.rs`. Benchmarks only.
#[doc(hidden)]
pub fn set_wide_fwd(on: bool) {
    WIDE_FWD.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether the wide tile can hold `cout` output channels: whole 64-channel panels.
fn wide_channels(cout: usize) -> bool {
    cout > 0 && cout.is_multiple_of(WV)
}

/// Inner indices per block of the wide implicit convolution (`A`'s block, `KC × 64` floats =
/// 32 KB, stays in L1 while the tiles sweep the image).
const WIDE_KC: usize = 128;

/// The weight `(Cout, K)` row-major in 64-channel k-major panels for the wide tile,
/// `a[(pn·K + kk)·64 + v] = w[pn·64 + v][kk]`, 64-byte aligned: `(buffer, offset)` — the
/// panel transpose of [`panels_t`] with the weight as a one-row "image" of `K` positions.
fn pack_wide(w: &[f32], cout: usize, k: usize) -> (Vec<f32>, usize) {
    let (mut ap, a0) = packed::aligned_zeros(cout * k);
    panels_t(w, cout, 1, k, k, &mut ap[a0..a0 + cout * k], k * WV);
    (ap, a0)
}

/// `ct (n × Cout, position-major, rows cout apart) = (A · B)ᵀ` on the wide tile: `apk` the
/// weight packed by [`pack_wide`] (`K` = `offs.len()`), `B(kk, j) = b[offs[kk] + j]` for
/// `j` below `n` rounded up to [`WR`] (those extra positions are read, and their products
/// land in `ct`'s spare rows). Blocks of [`WIDE_KC`] inner indices: `A`'s block stays in L1
/// while the tiles sweep the positions.
fn wide_product(apk: &[f32], cout: usize, b: &[f32], offs: &[usize], n: usize, ct: &mut [f32]) {
    let (k, np, panels) = (offs.len(), n.next_multiple_of(WR), cout / WV);
    assert!(apk.len() >= cout * k && ct.len() >= np * cout, "wide_product: buffers too small");
    assert!(offs.iter().all(|&o| o + np <= b.len()), "wide_product: B rows out of bounds");
    for k0 in (0..k).step_by(WIDE_KC) {
        let kl = WIDE_KC.min(k - k0);
        for pn in 0..panels {
            let a = apk[(pn * k + k0) * WV..].as_ptr();
            for n0 in (0..np).step_by(WR) {
                // SAFETY: A's block holds kl·WV floats; every B read, b[offs[kk] + n0 + j] for
                // j < WR, is inside b (asserted: offs + np ≤ len); the tile's rows
                // n0..n0+WR, columns pn·WV..+WV lie inside ct (np × cout).
                unsafe {
                    packed::wide_tile_cols(
                        kl,
                        a,
                        b.as_ptr().add(n0),
                        offs[k0..].as_ptr(),
                        ct.as_mut_ptr().add(n0 * cout + pn * WV),
                        cout,
                        k0 > 0,
                    )
                }
            }
        }
    }
}

/// Stride-1 convolution as an implicit GEMM, `w` the weight `(Cout, C·k·k)` row-major: each
/// image is copied into a zero-padded plane per channel `(Hp, Wp)`, and output `(oy, ox)` taken
/// on the padded-width grid `q = oy·Wp + ox` reads tap `(c, ky, kx)` at
/// `q + c·Hp·Wp + ky·Wp + kx` — every row of the column matrix is the padded image at a fixed
/// shift, so no column matrix is written, read or packed. The grid's `Wp − Wo` extra columns
/// per output row are computed and dropped (6% of the work at 32×32, 11% at 16×16).
///
/// The product runs on the wide tile ([`wide_product`]: 6 output positions × 64 output
/// channels, `A` the weight in 64-channel k-major panels, `B` the padded image's shifted rows
/// broadcast, no vector load of an unaligned row) when `Cout` is a multiple of 64, landing
/// position-major `(grid, Cout)` and transposed into NCHW; else on the 8×32 tile
/// ([`packed::gemm`] with `B` read in place), landing `(Cout, grid)`.
fn conv_implicit(x: &[f32], w: &[f32], g: ConvGeom, cout: usize) -> Vec<f32> {
    debug_assert_eq!(g.stride, 1);
    let wide = wide_channels(cout) && WIDE_FWD.load(std::sync::atomic::Ordering::Relaxed);
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
    let mut y = unsafe { super::unwritten(g.n * cout * plane) };
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

/// Whether [`conv_implicit`] takes this forward. Only with the AVX-512 microkernel: the
/// portable one is exact but scalar, far slower than the `gemm` crate's im2col path.
fn implicit_fwd(g: &ConvGeom) -> bool {
    packed::has_fast_kernel() && g.stride == 1 && g.ho() * g.wo() >= IMPLICIT_MIN_PLANE
}

/// The grad-input of a stride-1 convolution is itself a stride-1 convolution of `gY` with the
/// flipped, transposed weight and padding `k − 1 − pad`: its geometry (it then runs as a
/// Winograd or implicit-GEMM forward, with no col2im).
fn grad_input_as_conv(g: &ConvGeom, cout: usize) -> Option<ConvGeom> {
    (g.stride == 1 && g.pad < g.k).then(|| ConvGeom {
        n: g.n,
        c: cout,
        h: g.ho(),
        w: g.wo(),
        k: g.k,
        stride: 1,
        pad: g.k - 1 - g.pad,
    })
}

/// Forward (3×3 stride-1 layers on 8×8+ planes: [`winograd::conv3x3`]; other large stride-1
/// planes: [`conv_implicit`]): per block ([`blocking`]), `Y (Cout, cols) = W (Cout, C·k·k) ·
/// cols`, written straight into NCHW for a single image (a band of rows is a column range of `Y_i`, rows
/// `Ho·Wo` apart), through a block buffer for several.
fn conv_fwd_cpu(x: &[f32], w: &[f32], g: ConvGeom, cout: usize) -> Vec<f32> {
    if winograd::applies(&g, cout) {
        return winograd::conv3x3(x, w, g, cout);
    }
    if implicit_fwd(&g) {
        return conv_implicit(x, w, g, cout);
    }
    let (plane, wo, ho) = (g.ho() * g.wo(), g.wo(), g.ho());
    let rl = g.row_len();
    let bl = blocking(&g);
    let max_cols = bl.imgs * bl.rows * wo;
    // SAFETY: every block's product is stored, not accumulated (the `gemm` crate does not
    // read dst then), and the blocks cover every image and output row.
    let mut y = unsafe { super::unwritten(g.n * cout * plane) };
    y.par_chunks_mut(bl.imgs * cout * plane).enumerate().for_each_init(
        || (vec![0f32; rl * max_cols], vec![0f32; if bl.imgs > 1 { cout * max_cols } else { 0 }]),
        |(buf, out), (t, yb)| {
            let nb = yb.len() / (cout * plane);
            for (i0, nb, oy0, oy1) in blocks(t * bl.imgs, t * bl.imgs + nb, ho, bl) {
                let (c, ld) = columns(buf, x, &g, 0..rl, i0, nb, oy0, oy1);
                let ncols = nb * (oy1 - oy0) * wo;
                if nb == 1 {
                    sgemm_ld(cout, ncols, rl, &mut yb[oy0 * wo..], plane, false, w, (rl, 1), c, (ld, 1));
                } else {
                    // Several whole images (oy0 = 0, oy1 = Ho).
                    sgemm_ld(cout, ncols, rl, out, ncols, false, w, (rl, 1), c, (ld, 1));
                    scatter(out, cout, plane, nb, yb);
                }
            }
        },
    );
    y
}

/// Grad-input: per block ([`blocking`]) of one task's images, `gcols (C·k·k, cols) = Wᵀ · gY`
/// with `Wᵀ` stored row-major (up to 1.7x faster for the deep layers than reading `W`
/// transposed, `examples/gemm_probe.rs`), then col2im image by image; a pointwise image's
/// gradient is the product itself. Images are independent, so any split gives the same bits.
fn conv_grad_input_cpu(w: &[f32], gy: &[f32], g: ConvGeom, cout: usize) -> Vec<f32> {
    // As a forward when that forward takes Winograd or the implicit GEMM (then no col2im).
    if let Some(gt) = grad_input_as_conv(&g, cout).filter(|gt| winograd::applies(gt, g.c) || implicit_fwd(gt)) {
        // W′ (C, Cout·k·k): W′[c][o, ky, kx] = W[o][c][k−1−ky][k−1−kx].
        let (k, kk2) = (g.k, g.k * g.k);
        let mut wf = vec![0f32; g.c * cout * kk2];
        for o in 0..cout {
            for c in 0..g.c {
                for t in 0..kk2 {
                    wf[(c * cout + o) * kk2 + t] = w[(o * g.c + c) * kk2 + (k - 1 - t / k) * k + (k - 1 - t % k)];
                }
            }
        }
        return conv_fwd_cpu(gy, &wf, gt, g.c);
    }
    let (plane, wo, ho) = (g.ho() * g.wo(), g.wo(), g.ho());
    let (rl, chw) = (g.row_len(), g.c * g.h * g.w);
    let bl = blocking(&g);
    let max_cols = bl.imgs * bl.rows * wo;
    let wt = transpose(w, cout, rl);
    let direct = bl.imgs == 1 && is_pointwise(&g);
    let mut gx = super::zeros(g.n * chw);
    gx.par_chunks_mut(bl.imgs * chw).enumerate().for_each_init(
        || {
            let gcols = vec![0f32; if direct { 0 } else { rl * max_cols }];
            (gcols, vec![0f32; if bl.imgs > 1 { cout * max_cols } else { 0 }])
        },
        |(gcols, gy_buf), (t, gxb)| {
            let nb = gxb.len() / chw;
            for (i0, nb, oy0, oy1) in blocks(t * bl.imgs, t * bl.imgs + nb, ho, bl) {
                let ncols = nb * (oy1 - oy0) * wo;
                let (gyb, gld) = gy_block(gy, cout, plane, i0, nb, oy0, wo, gy_buf);
                if direct {
                    // gX_i (C, band) = Wᵀ (C, Cout) · gY_i, rows Ho·Wo apart.
                    sgemm_ld(rl, ncols, cout, &mut gxb[oy0 * wo..], plane, false, &wt, (cout, 1), gyb, (gld, 1));
                } else {
                    sgemm_ld(rl, ncols, cout, gcols, ncols, false, &wt, (cout, 1), gyb, (gld, 1));
                    let band = (oy1 - oy0) * wo;
                    if same_width(&g) {
                        col2im_runs(gcols, nb, &g, oy0, oy1, &mut gxb[..nb * chw], ncols);
                    } else {
                        for j in 0..nb {
                            col2im_rows(&mut gcols[j * band..], &g, oy0, oy1, &mut gxb[j * chw..(j + 1) * chw], ncols);
                        }
                    }
                }
            }
        },
    );
    gx
}

/// gY of images `i0..i0+nb`, output rows `[oy0, …)`, as a `(Cout, cols)` matrix and its row
/// stride: a column range of the image's own gradient for one image, gathered for several.
#[allow(clippy::too_many_arguments)]
fn gy_block<'a>(
    gy: &'a [f32],
    cout: usize,
    plane: usize,
    i0: usize,
    nb: usize,
    oy0: usize,
    wo: usize,
    buf: &'a mut [f32],
) -> (&'a [f32], usize) {
    if nb == 1 {
        (&gy[i0 * cout * plane + oy0 * wo..(i0 + 1) * cout * plane], plane)
    } else {
        gather(gy, cout, plane, i0, nb, buf);
        (&buf[..cout * nb * plane], nb * plane)
    }
}

/// The weight gradient's work is cut into this many fixed tasks (taps × image chunks), whatever
/// the number of threads, and the image chunks' partial sums are added in order, so a run
/// gives the same bits with any number of threads (on one kind of CPU: the `gemm` crate picks
/// its SIMD kernel per machine).
const GW_TASKS: usize = 8;

/// Weight gradient: `gWᵀ (C·k·k, Cout) += cols · gYᵀ` over all images (this orientation runs
/// up to 2.5x faster for the 32×32 layers than `gW += gY · colsᵀ`, `examples/gemm_probe.rs`),
/// the taps split across tasks so that the large weights of the deep layers need no partial
/// copies, and the images split too where the weight is small (the stem, 1×1 convolutions).
/// Each task im2cols only its own taps, in blocks of about [`TARGET_GW_COLS`] columns, and
/// multiplies them on the wide tile where it applies (3×3 or larger, 64+ taps, output
/// channels a multiple of 64: `gYᵀ` is laid out in 64-channel panels once per layer), else
/// on the `gemm` crate. 3×3 stride-1 layers on 16×16+ planes take [`winograd::grad_weight`],
/// other large stride-1 planes [`conv_grad_weight_implicit`] instead.
fn conv_grad_weight_cpu(x: &[f32], gy: &[f32], g: ConvGeom, cout: usize) -> Vec<f32> {
    if winograd::applies_gw(&g, cout) && wide_gw_applies(&g, cout) {
        return winograd::grad_weight(x, gy, g, cout);
    }
    if implicit_gw(&g, cout) {
        return conv_grad_weight_implicit(x, gy, g, cout);
    }
    let (plane, wo, ho) = (g.ho() * g.wo(), g.wo(), g.ho());
    let rl = g.row_len();
    // The wide tile on the im2col columns where it applies: 64-channel panels, 64+ taps, not
    // 1×1 (conv_ab, one process: 3×3 stride-2 114–169 GFLOP/s vs 109–137 on the gemm crate,
    // 16×16 155–185 vs 148–150, 8×8 152–197 vs 163–171, 4×4 even; 1×1 stride-2 44–76 vs 66–85).
    let wide = wide_gw_applies(&g, cout) && g.k > 1;
    let bl = blocking_for(&g, TARGET_GW_COLS.load(std::sync::atomic::Ordering::Relaxed));
    let max_cols = bl.imgs * bl.rows * wo;
    // gYᵀ in 64-channel panels, `[pn][image][position][64]`, once for all tasks.
    let (mut gyt_buf, go) = packed::aligned_zeros(if wide { g.n * cout * plane } else { 0 });
    let gyt_all = &mut gyt_buf[go..go + if wide { g.n * cout * plane } else { 0 }];
    if wide {
        gyt_all.par_chunks_mut(plane * WV).enumerate().for_each(|(t, dst)| {
            let (pn, i) = (t / g.n, t % g.n);
            let gyi = &gy[(i * cout + pn * WV) * plane..][..WV * plane];
            panels_t(gyi, WV, ho, wo, wo, dst, 0);
        });
    }
    let gyt_all = &*gyt_all;
    // Taps per task: at least 128 rows (a narrower product runs far below peak).
    let tap_parts = (rl / 128).clamp(1, GW_TASKS);
    let taps_per = rl.div_ceil(tap_parts);
    let img_chunks = (GW_TASKS / tap_parts).min(g.n.div_ceil(bl.imgs)).max(1);
    let imgs_per = g.n.div_ceil(img_chunks).next_multiple_of(bl.imgs);
    gw_from_parts(img_chunks, tap_parts, taps_per, rl, cout, |ci, p| {
        let taps = p * taps_per..((p + 1) * taps_per).min(rl);
        let mut acc = vec![0f32; taps.len() * cout];
        let mut buf = vec![0f32; taps.len() * max_cols];
        let mut gy_buf = vec![0f32; if bl.imgs > 1 && !wide { cout * max_cols } else { 0 }];
        let (lo, hi) = (ci * imgs_per, ((ci + 1) * imgs_per).min(g.n));
        for (i0, nb, oy0, oy1) in blocks(lo, hi, ho, bl) {
            let ncols = nb * (oy1 - oy0) * wo;
            let (c, ld) = columns(&mut buf, x, &g, taps.clone(), i0, nb, oy0, oy1);
            if wide {
                // The wide tile on the columns, A = the block's positions of gYᵀ.
                let a = &gyt_all[(i0 * plane + oy0 * wo) * WV..];
                wide_gw(&mut acc, cout, taps.len(), |r| r * ld, c, a, g.n * plane * WV, ncols);
            } else {
                let (gyb, gld) = gy_block(gy, cout, plane, i0, nb, oy0, wo, &mut gy_buf);
                sgemm_ld(taps.len(), cout, ncols, &mut acc, cout, true, c, (ld, 1), gyb, (1, gld));
            }
        }
        acc
    })
}

/// Run the weight gradient's fixed tasks — `task(ci, p)` returns the `gWᵀ` rows
/// `p·rows_per..` (`(rows, Cout)`) over image chunk `ci` — in parallel, and add their
/// transposes into `gW (Cout, rl)`, image chunks in order: the same bits whatever the number
/// of threads.
fn gw_from_parts(
    chunks: usize,
    parts: usize,
    rows_per: usize,
    rl: usize,
    cout: usize,
    task: impl Fn(usize, usize) -> Vec<f32> + Sync,
) -> Vec<f32> {
    let tasks: Vec<(usize, usize)> = (0..chunks).flat_map(|ci| (0..parts).map(move |p| (ci, p))).collect();
    let partial: Vec<Vec<f32>> = tasks.into_par_iter().map(|(ci, p)| task(ci, p)).collect();
    let mut gw = vec![0f32; cout * rl];
    // Chunk-major, as the tasks were listed.
    for (t, part) in partial.iter().enumerate() {
        transpose_add(part, part.len() / cout, cout, &mut gw, rl, (t % parts) * rows_per);
    }
    gw
}

/// A task's partial `gWᵀ` of the implicit weight gradient is kept under this size (L2), the
/// taps split into more parts when the layer's weight is larger.
const GW_ACC_BYTES: usize = 256 << 10;

static IMPLICIT_GW: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Turn the wide-tile weight gradients off (implicit and over im2col columns: every weight
/// gradient then runs on the `gemm` crate) or back on, process-wide, for
/// `examples/conv_ab.rs`'s A/B. Benchmarks only.
#[doc(hidden)]
pub fn set_implicit_gw(on: bool) {
    IMPLICIT_GW.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Output planes from this size up take the implicit weight gradient. Measured with
/// `examples/conv_ab.rs` (batch 64, one process, interleaved, min of 7): the 32×32 layers
/// ran 185–200 GFLOP/s against 120–128 on the im2col path; at 16×16 the two were even
/// (151–160 vs 151–175), at 8×8 and 4×4 the implicit one was slower (142–148 vs 161–166,
/// 100–102 vs 136–142: short grids, a third of a 4×4 grid is padding).
const IMPLICIT_GW_MIN_PLANE: usize = 512;

/// Whether the weight gradient runs as [`conv_grad_weight_implicit`]: stride 1, a plane of
/// [`IMPLICIT_GW_MIN_PLANE`]+ outputs, 64+ taps (not the stem), output channels a multiple of
/// 64, the AVX-512 kernel.
fn implicit_gw(g: &ConvGeom, cout: usize) -> bool {
    wide_gw_applies(g, cout) && g.stride == 1 && g.ho() * g.wo() >= IMPLICIT_GW_MIN_PLANE
}

/// What both wide-tile weight gradients need: the AVX-512 kernel, 64+ taps (not the stem),
/// whole 64-channel panels, and the switch on.
fn wide_gw_applies(g: &ConvGeom, cout: usize) -> bool {
    packed::has_fast_kernel() && g.row_len() >= 64 && wide_channels(cout) && IMPLICIT_GW.load(std::sync::atomic::Ordering::Relaxed)
}

/// `acc (rows × Cout, rows cout apart) += B · A` on the wide tile, the weight gradient's
/// inner loop: `A` is `gYᵀ` for `kn` output positions in 64-channel panels `pstride` apart
/// (`a[pn·pstride + q·64 + v]`), `B`'s row `r` is `kn` contiguous floats at `b[roff(r)..]`.
/// Blocks of [`WIDE_KC`] positions: `A`'s block stays in L1 while the tiles of rows sweep it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn wide_gw(
    acc: &mut [f32],
    cout: usize,
    rows: usize,
    roff: impl Fn(usize) -> usize,
    b: &[f32],
    a: &[f32],
    pstride: usize,
    kn: usize,
) {
    let panels = cout / WV;
    assert!(acc.len() >= rows * cout && a.len() >= (panels - 1) * pstride + kn * WV);
    assert!((0..rows).all(|r| roff(r) + kn <= b.len()), "wide_gw: B rows out of bounds");
    let mut tile = [0f32; WR * WV];
    for k0 in (0..kn).step_by(WIDE_KC) {
        let kl = WIDE_KC.min(kn - k0);
        for pn in 0..panels {
            let ap = a[pn * pstride + k0 * WV..].as_ptr();
            for t0 in (0..rows).step_by(WR) {
                let tr = WR.min(rows - t0);
                let boff: [usize; WR] = std::array::from_fn(|j| roff(t0 + j.min(tr - 1)) + k0);
                let off = t0 * cout + pn * WV;
                if tr == WR {
                    // SAFETY: A's block holds kl·WV floats, each B row kl floats (asserted
                    // above), the tile's WR rows × WV columns lie inside acc (rows cout apart,
                    // pn·WV + WV ≤ cout).
                    unsafe { packed::wide_tile(kl, ap, b.as_ptr(), &boff, acc.as_mut_ptr().add(off), cout, true) }
                } else {
                    // SAFETY: as above, into the local WR × WV tile.
                    unsafe { packed::wide_tile(kl, ap, b.as_ptr(), &boff, tile.as_mut_ptr(), WV, false) }
                    for j in 0..tr {
                        let dst = &mut acc[off + j * cout..][..WV];
                        dst.iter_mut().zip(&tile[j * WV..(j + 1) * WV]).for_each(|(d, s)| *d += s);
                    }
                }
            }
        }
    }
}

/// Weight gradient of a stride-1 convolution as an implicit GEMM on the wide tile
/// ([`packed::wide_tile`]): with `q = oy·Wp + ox` on the padded-width output grid,
/// `gWᵀ[(c, ky, kx)][o] = Σ_q xpad[c·Hp·Wp + ky·Wp + kx + q] · gY[o][q]` — each row of the
/// column matrix is the zero-padded image at a fixed shift, read in place (no im2col), and
/// `gY` is laid out `q`-major in 64-channel panels with zeros at the `Wp − Wo` extra columns
/// (so they add nothing). Tasks: taps × image chunks as in [`conv_grad_weight_cpu`], fixed
/// whatever the thread count, image chunks added in order.
fn conv_grad_weight_implicit(x: &[f32], gy: &[f32], g: ConvGeom, cout: usize) -> Vec<f32> {
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

/// Both gradients (either skipped when not wanted: the stem's input is the image). The column
/// matrices never exist for the whole batch nor enter autograd.
fn conv_bwd_cpu(
    x: &[f32],
    w: &[f32],
    gy: &[f32],
    g: ConvGeom,
    cout: usize,
    want_gx: bool,
    want_gw: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let gx = want_gx.then(|| conv_grad_input_cpu(w, gy, g, cout));
    let gw = want_gw.then(|| conv_grad_weight_cpu(x, gy, g, cout));
    (gx, gw)
}

/// The kernel's three passes on raw NCHW slices, for `moco bench step`'s per-op breakdown:
/// `y = conv(x, w)`, `gx` alone, `gW` alone (the training step runs both gradients in one pass).
pub mod parts {
    use super::*;
    /// Forward.
    pub fn forward(x: &[f32], w: &[f32], g: ConvGeom, cout: usize) -> Vec<f32> {
        conv_fwd_cpu(x, w, g, cout)
    }
    /// Gradient of the input only.
    pub fn grad_input(x: &[f32], w: &[f32], gy: &[f32], g: ConvGeom, cout: usize) -> Vec<f32> {
        conv_bwd_cpu(x, w, gy, g, cout, true, false).0.unwrap_or_default()
    }
    /// Gradient of the weight only.
    pub fn grad_weight(x: &[f32], w: &[f32], gy: &[f32], g: ConvGeom, cout: usize) -> Vec<f32> {
        conv_bwd_cpu(x, w, gy, g, cout, false, true).1.unwrap_or_default()
    }
}

/// The whole convolution as one autograd node (x, weight) → y.
struct Conv2dOp {
    g: ConvGeom,
    cout: usize,
}

impl candle_core::CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "conv2d_im2col"
    }
    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ws: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.g;
        let y = conv_fwd_cpu(f32_slice(xs, xl)?, f32_slice(ws, wl)?, g, self.cout);
        Ok((CpuStorage::F32(y), Shape::from((g.n, self.cout, g.ho(), g.wo()))))
    }
    fn bwd(&self, x: &Tensor, wt: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (gx, gw) = {
            let (xs, xl) = x.storage_and_layout();
            let (ws, wl) = wt.storage_and_layout();
            let (gs, gl) = grad.storage_and_layout();
            let (Storage::Cpu(xs), Storage::Cpu(ws), Storage::Cpu(gs)) = (&*xs, &*ws, &*gs) else {
                candle_core::bail!("conv2d_im2col: CPU only")
            };
            // An input outside autograd (the image batch) gets no gradient.
            let (want_gx, want_gw) = (x.track_op(), wt.track_op());
            conv_bwd_cpu(
                f32_slice(xs, xl)?,
                f32_slice(ws, wl)?,
                f32_slice(gs, gl)?,
                self.g,
                self.cout,
                want_gx,
                want_gw,
            )
        };
        let gx = gx.map(|v| Tensor::from_vec(v, x.shape(), x.device())).transpose()?;
        let gw = gw.map(|v| Tensor::from_vec(v, wt.shape(), wt.device())).transpose()?;
        Ok((gx, gw))
    }
}

/// Convolution without bias: `x (N, C, H, W)`, `weight (Cout, C, k, k)` → `(N, Cout, Ho, Wo)`.
pub fn conv2d(x: &Tensor, weight: &Tensor, stride: usize, pad: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (cout, cin, k, k2) = weight.dims4()?;
    if cin != c || k != k2 {
        candle_core::bail!("conv2d: input has {c} channels, weight {:?}", weight.dims());
    }
    let g = ConvGeom {
        n,
        c,
        h,
        w,
        k,
        stride,
        pad,
    };
    x.contiguous()?.apply_op2(&weight.contiguous()?, Conv2dOp { g, cout })
}

/// Direct f64 references for the kernels' tests (here and in [`super::winograd`]).
#[cfg(test)]
pub(crate) mod reference {
    use super::ConvGeom;

    /// Every (output position, tap) pair of a convolution whose input pixel lies inside:
    /// `f(out channel, in channel, tap, input index, output index)` with the tap
    /// `ky·k + kx` and the indices into `x (N, C, H, W)` and `y (N, Cout, Ho, Wo)`.
    fn for_each_term(g: &ConvGeom, cout: usize, mut f: impl FnMut(usize, usize, usize, usize, usize)) {
        let (ho, wo, k) = (g.ho(), g.wo(), g.k);
        for i in 0..g.n {
            for o in 0..cout {
                for ci in 0..g.c {
                    for t in 0..k * k {
                        for oy in 0..ho {
                            for ox in 0..wo {
                                let iy = (oy * g.stride + t / k) as isize - g.pad as isize;
                                let ix = (ox * g.stride + t % k) as isize - g.pad as isize;
                                if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w {
                                    let xi = ((i * g.c + ci) * g.h + iy as usize) * g.w + ix as usize;
                                    f(o, ci, t, xi, ((i * cout + o) * ho + oy) * wo + ox);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// `y = conv(x, w)`, `w (Cout, C, k, k)`.
    pub(crate) fn forward(x: &[f32], w: &[f32], g: &ConvGeom, cout: usize) -> Vec<f64> {
        let (c, kk) = (g.c, g.k * g.k);
        let mut y = vec![0f64; g.n * cout * g.ho() * g.wo()];
        for_each_term(g, cout, |o, ci, t, xi, yi| y[yi] += x[xi] as f64 * w[(o * c + ci) * kk + t] as f64);
        y
    }

    /// `gW (Cout, C, k, k)` from `x` and `gy (N, Cout, Ho, Wo)`.
    pub(crate) fn grad_weight(x: &[f32], gy: &[f32], g: &ConvGeom, cout: usize) -> Vec<f64> {
        let (c, kk) = (g.c, g.k * g.k);
        let mut gw = vec![0f64; cout * c * kk];
        for_each_term(g, cout, |o, ci, t, xi, yi| {
            gw[(o * c + ci) * kk + t] += x[xi] as f64 * gy[yi] as f64
        });
        gw
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use rand::{Rng, SeedableRng};

    fn rand_tensor(shape: &[usize], rng: &mut rand_chacha::ChaCha8Rng) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor::from_vec(
            (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect::<Vec<_>>(),
            shape,
            &Device::Cpu,
        )
        .unwrap()
    }

    fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        crate::devcheck::max_abs_diff(&a, &b) / scale
    }

    /// Forward and both gradients against candle's own conv2d, odd sizes and stride 2.
    #[test]
    fn matches_candle_conv_forward_and_backward() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        for &(n, c, h, w, cout, k, s, p) in &[
            (2, 3, 7, 5, 4, 3, 1, 1),
            (3, 5, 9, 9, 6, 3, 2, 1),
            (2, 4, 6, 7, 3, 1, 2, 0),
            (1, 2, 11, 11, 5, 7, 2, 3),
            (2, 3, 5, 5, 2, 1, 1, 0),
            (2, 3, 1, 1, 4, 3, 2, 1),
            (1, 2, 2, 3, 3, 3, 2, 1),
            (9, 4, 8, 8, 6, 3, 1, 1),
            (5, 6, 6, 6, 4, 1, 2, 0),
            (13, 3, 6, 6, 4, 3, 1, 1),
            (11, 5, 4, 4, 7, 1, 1, 0),
            (19, 8, 8, 8, 16, 3, 2, 1),
            // Planes of 256+ outputs go through the GEMM in bands of rows (the last one short).
            (2, 3, 20, 17, 4, 3, 1, 1),
            (2, 2, 40, 33, 3, 3, 2, 1),
            (2, 3, 18, 16, 4, 1, 1, 0),
            (1, 2, 23, 23, 2, 5, 1, 2),
            // Planes of 128–255 outputs: forward im2col and grad-input col2im in bands of rows
            // on the same-width path (3×3 pad 1, 5×5 pad 2, a 1-pixel-wide plane).
            (2, 3, 12, 13, 4, 3, 1, 1),
            (1, 2, 12, 12, 3, 5, 1, 2),
            (2, 2, 150, 1, 3, 3, 1, 1),
            // 64 output channels: the wide tile (implicit on planes of 256+/512+ outputs, on
            // the im2col columns for the weight gradient of smaller and stride-2 ones).
            (2, 8, 8, 8, 64, 3, 2, 1),
            (3, 8, 6, 6, 64, 3, 1, 1),
            (2, 3, 17, 16, 64, 3, 1, 1),
            (1, 2, 24, 23, 128, 3, 1, 1),
            // 64 input channels: grad-input on the wide implicit path too (16×16 plane), the
            // weight gradient on the wide tile over im2col columns (72+ taps); the implicit
            // weight gradient through the dispatch (a 552-pixel plane, 72 taps); row bands of
            // a stride-2 layer's columns on the wide tile.
            (2, 64, 16, 16, 64, 3, 1, 1),
            (1, 8, 24, 23, 64, 3, 1, 1),
            (2, 8, 34, 34, 64, 3, 2, 1),
        ] {
            let x = Var::from_tensor(&rand_tensor(&[n, c, h, w], &mut rng)).unwrap();
            let wt = Var::from_tensor(&rand_tensor(&[cout, c, k, k], &mut rng)).unwrap();
            let probe = rand_tensor(&[n, cout, (h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1], &mut rng);
            let ours = conv2d(x.as_tensor(), wt.as_tensor(), s, p).unwrap();
            let theirs = x.as_tensor().conv2d(wt.as_tensor(), p, s, 1, 1).unwrap();
            assert_eq!(ours.dims(), theirs.dims());
            assert!(max_rel(&ours, &theirs) < 1e-5);
            let g1 = (ours * &probe).unwrap().sum_all().unwrap().backward().unwrap();
            // candle 0.11's own conv backward fails on some stride-2 odd shapes (its
            // conv_transpose output is one pixel short), so compare where it works …
            if let Ok(g2) = (theirs * &probe).unwrap().sum_all().unwrap().backward() {
                for v in [&x, &wt] {
                    let e = max_rel(g1.get(v.as_tensor()).unwrap(), g2.get(v.as_tensor()).unwrap());
                    assert!(e < 1e-5, "grad mismatch {e} for shape {:?} k{k} s{s}", v.dims());
                }
            }
            // … and always against finite differences: the loss is linear in x and in w, so a
            // unit forward difference is exact up to rounding.
            let loss = |xt: &Tensor, wtt: &Tensor| {
                conv2d(xt, wtt, s, p)
                    .unwrap()
                    .mul(&probe)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap() as f64
            };
            let base = loss(x.as_tensor(), wt.as_tensor());
            for (v, is_x) in [(&x, true), (&wt, false)] {
                let flat = v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let grad = g1.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                for i in (0..flat.len()).step_by(flat.len() / 7 + 1) {
                    let mut bumped = flat.clone();
                    bumped[i] += 1.0;
                    let t = Tensor::from_vec(bumped, v.dims(), &Device::Cpu).unwrap();
                    let fd = if is_x { loss(&t, wt.as_tensor()) } else { loss(x.as_tensor(), &t) } - base;
                    assert!(
                        (fd - grad[i] as f64).abs() < 1e-3 * (1.0 + fd.abs()),
                        "fd {fd} vs {} at {i}",
                        grad[i]
                    );
                }
            }
        }
    }

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
            let got = conv_implicit(&x, &wt, g, cout);
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
                pool.install(|| conv_grad_weight_implicit(&x, &gy, g, cout))
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

    /// The gradients do not depend on the number of threads (fixed chunks, summed in order).
    #[test]
    fn backward_bits_do_not_depend_on_threads() {
        // A small weight (image chunks summed), and a wide one whose taps are split across
        // tasks, with planes of 256+ outputs cut into bands of rows.
        for (g, cout) in [
            (
                ConvGeom {
                    n: 13,
                    c: 5,
                    h: 9,
                    w: 7,
                    k: 3,
                    stride: 1,
                    pad: 1,
                },
                6,
            ),
            (
                ConvGeom {
                    n: 5,
                    c: 40,
                    h: 20,
                    w: 17,
                    k: 3,
                    stride: 1,
                    pad: 1,
                },
                7,
            ),
            // The wide tile on the im2col columns (64 output channels, a small plane).
            (
                ConvGeom {
                    n: 5,
                    c: 8,
                    h: 8,
                    w: 8,
                    k: 3,
                    stride: 1,
                    pad: 1,
                },
                64,
            ),
        ] {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
            let mut vals = |n: usize| (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect::<Vec<_>>();
            let x = vals(g.n * g.c * g.h * g.w);
            let w = vals(cout * g.row_len());
            let gy = vals(g.n * cout * g.ho() * g.wo());
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| conv_bwd_cpu(&x, &w, &gy, g, cout, true, true))
            };
            let (gx1, gw1) = run(1);
            for threads in [2, 3, 5] {
                let (gx, gw) = run(threads);
                assert!(gx1 == gx && gw1 == gw, "{threads} threads changed the gradient bits");
            }
            // Each gradient alone (the bench's parts, and a backward whose input needs none) is
            // the same bits as both together.
            assert_eq!(Some(parts::grad_input(&x, &w, &gy, g, cout)), gx1);
            assert_eq!(Some(parts::grad_weight(&x, &w, &gy, g, cout)), gw1);
            // And both match a plain f64 reference.
            let (gx1, gw1) = (gx1.unwrap(), gw1.unwrap());
            let (ho, wo) = (g.ho(), g.wo());
            let mut gx_ref = vec![0f64; gx1.len()];
            let mut gw_ref = vec![0f64; gw1.len()];
            for i in 0..g.n {
                for o in 0..cout {
                    for oy in 0..ho {
                        for ox in 0..wo {
                            let d = gy[((i * cout + o) * ho + oy) * wo + ox] as f64;
                            for c in 0..g.c {
                                for ky in 0..g.k {
                                    for kx in 0..g.k {
                                        let (iy, ix) = (
                                            (oy * g.stride + ky) as isize - g.pad as isize,
                                            (ox * g.stride + kx) as isize - g.pad as isize,
                                        );
                                        if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                            continue;
                                        }
                                        let xi = ((i * g.c + c) * g.h + iy as usize) * g.w + ix as usize;
                                        let wi = ((o * g.c + c) * g.k + ky) * g.k + kx;
                                        gx_ref[xi] += d * w[wi] as f64;
                                        gw_ref[wi] += d * x[xi] as f64;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            for (ours, exact) in [(&gx1, &gx_ref), (&gw1, &gw_ref)] {
                let scale = exact.iter().fold(0f64, |m, v| m.max(v.abs()));
                let err = ours.iter().zip(exact.iter()).fold(0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
                assert!(err < 1e-5 * scale, "max error {err} against the f64 reference (scale {scale})");
            }
        }
    }

    /// An input outside autograd (the image batch at the stem) gets no gradient; the weight does.
    #[test]
    fn no_input_gradient_for_a_constant_input() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let x = rand_tensor(&[2, 3, 6, 6], &mut rng);
        let w = Var::from_tensor(&rand_tensor(&[4, 3, 3, 3], &mut rng)).unwrap();
        let y = conv2d(&x, w.as_tensor(), 1, 1).unwrap();
        let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        assert!(grads.get(&x).is_none());
        let gw = grads.get(w.as_tensor()).expect("weight gradient");
        let reference = x.conv2d(w.as_tensor(), 1, 1, 1, 1).unwrap().sqr().unwrap().sum_all().unwrap();
        let gref = reference.backward().unwrap();
        assert!(max_rel(gw, gref.get(w.as_tensor()).unwrap()) < 1e-5);
    }

    /// The same-width im2col of several images at once against its definition: taps starting
    /// and ending mid-channel (the weight gradient splits them anywhere), bands of rows, rows of
    /// the column matrix wider than the images' columns, every entry written (NaN-filled buffer).
    #[test]
    fn im2col_runs_matches_its_definition() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for (nb, c, h, w, k, pad) in [(3, 4, 5, 6, 3, 1), (2, 3, 4, 4, 5, 2), (4, 2, 3, 2, 1, 0), (2, 2, 6, 1, 3, 1)] {
            let g = ConvGeom {
                n: nb,
                c,
                h,
                w,
                k,
                stride: 1,
                pad,
            };
            assert!(same_width(&g));
            let x: Vec<f32> = (0..nb * c * h * w).map(|_| rng.random_range(-1.0..1.0)).collect();
            let rl = g.row_len();
            for (taps, oy0, oy1) in [(0..rl, 0, h), (k * k / 2 + 1..rl - 1, 1, h), (1..2, 0, h.div_ceil(2))] {
                let band = (oy1 - oy0) * w;
                let ld = nb * band + 3;
                let mut cols = vec![f32::NAN; taps.len() * ld];
                im2col_runs(&x, nb, &g, taps.clone(), oy0, oy1, &mut cols, ld);
                for j in taps.clone() {
                    let (ci, ky, kx) = (j / (k * k), (j / k) % k, j % k);
                    for b in 0..nb {
                        for oy in oy0..oy1 {
                            for ox in 0..w {
                                let (iy, ix) = ((oy + ky) as isize - pad as isize, (ox + kx) as isize - pad as isize);
                                let want = if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                    x[((b * c + ci) * h + iy as usize) * w + ix as usize]
                                } else {
                                    0.0
                                };
                                let got = cols[(j - taps.start) * ld + b * band + (oy - oy0) * w + ox];
                                assert_eq!(got, want, "{g:?} taps {taps:?} tap {j} image {b} ({oy}, {ox})");
                            }
                        }
                    }
                }
            }
        }
    }

    /// col2im is the adjoint of im2col, `<im2col(x), y> = <x, col2im(y)>`, on the general path
    /// (stride 2) and the shifted-run path of same-width convolutions (3×3 pad 1, 5×5 pad 2,
    /// 1×1, a 1-pixel-wide plane), whole planes and bands of rows; and im2col matches its
    /// definition entry by entry.
    #[test]
    fn col2im_is_adjoint_of_im2col() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for (c, h, w, k, stride, pad) in [
            (3, 6, 5, 3, 2, 1),
            (3, 6, 5, 3, 1, 1),
            (2, 7, 4, 5, 1, 2),
            (2, 3, 3, 1, 1, 0),
            (2, 5, 1, 3, 1, 1),
            (2, 2, 2, 5, 1, 2),
        ] {
            let g = ConvGeom {
                n: 1,
                c,
                h,
                w,
                k,
                stride,
                pad,
            };
            let (ho, wo) = (g.ho(), g.wo());
            for (oy0, oy1) in [(0, ho), (1.min(ho), ho), (0, ho.div_ceil(2))] {
                let band = (oy1 - oy0) * wo;
                let x: Vec<f32> = (0..c * h * w).map(|_| rng.random_range(-1.0..1.0)).collect();
                let y: Vec<f32> = (0..g.row_len() * band).map(|_| rng.random_range(-1.0..1.0)).collect();
                let mut cols = vec![f32::NAN; y.len()];
                im2col_rows(&x, &g, 0..g.row_len(), oy0, oy1, &mut cols, band);
                for j in 0..g.row_len() {
                    let (ci, ky, kx) = (j / (k * k), (j / k) % k, j % k);
                    for oy in oy0..oy1 {
                        for ox in 0..wo {
                            let (iy, ix) = (
                                (oy * stride + ky) as isize - pad as isize,
                                (ox * stride + kx) as isize - pad as isize,
                            );
                            let want = if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                x[(ci * h + iy as usize) * w + ix as usize]
                            } else {
                                0.0
                            };
                            assert_eq!(cols[j * band + (oy - oy0) * wo + ox], want, "{g:?} tap {j} ({oy}, {ox})");
                        }
                    }
                }
                let mut back = vec![0f32; x.len()];
                col2im_rows(&mut y.clone(), &g, oy0, oy1, &mut back, band);
                let lhs: f64 = cols.iter().zip(&y).map(|(a, b)| (*a as f64) * (*b as f64)).sum();
                let rhs: f64 = x.iter().zip(&back).map(|(a, b)| (*a as f64) * (*b as f64)).sum();
                assert!((lhs - rhs).abs() < 1e-4, "{g:?} rows {oy0}..{oy1}: {lhs} vs {rhs}");
            }
        }
    }
}
