//! Convolution as im2col + GEMM, the path every convolution can take: the column matrix is
//! built per block of ~128 columns (row bands of a large plane, several images of a small
//! one: [`super::split::blocking`]) into a buffer that stays in cache, never for the whole
//! batch. Same-width convolutions build each tap's row as one shifted run of the plane
//! ([`same_width`]), others row by row. [`forward`] is `W · cols` on the `gemm` crate,
//! [`grad_input`] `col2im(Wᵀ · gY)`, [`grad_weight`] `cols · gYᵀ` on the wide tile or the
//! `gemm` crate.

use super::geometry::{is_pointwise, valid_range, ConvGeom};
use super::knobs;
use super::split::{blocking, blocking_for, blocks, gw_from_parts, GW_TASKS};
use super::wide::{self, panels_t, wide_gw};
use crate::kernels::cpu::{unwritten, zeros};
use crate::kernels::packed::{self, WV};
use crate::kernels::sgemm::{sgemm_ld, transpose};
use rayon::prelude::*;
use std::ops::Range;

/// A stride-1 convolution whose output rows are as wide as its input rows (padding
/// `(k − 1)/2`): tap `(c, ky, kx)`'s row of the column matrix over output rows `[oy0, oy1)` is
/// then one contiguous run of the input plane, shifted by `(ky − pad)·W + kx − pad`, with the
/// entries that wrap across a row edge (or fall off the plane) zero. Taken while
/// [`knobs::Knobs::shifted_runs`] is on.
fn same_width(g: &ConvGeom) -> bool {
    g.stride == 1 && 2 * g.pad + 1 == g.k && knobs::get().shifted_runs
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
/// plane and zero its wrapped edge columns: row by row, the deep layers' 8- and 4-pixel rows
/// made the copies a large share of their forward.
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

/// Forward as im2col + GEMM: per block ([`blocking`]), `Y (Cout, cols) = W (Cout, C·k·k) ·
/// cols`, written straight into NCHW for a single image (a band of rows is a column range of
/// `Y_i`, rows `Ho·Wo` apart), through a block buffer for several.
pub(super) fn forward(x: &[f32], w: &[f32], g: ConvGeom, cout: usize) -> Vec<f32> {
    let (plane, wo, ho) = (g.ho() * g.wo(), g.wo(), g.ho());
    let rl = g.row_len();
    let bl = blocking(&g);
    let max_cols = bl.imgs * bl.rows * wo;
    // SAFETY: every block's product is stored, not accumulated (the `gemm` crate does not
    // read dst then), and the blocks cover every image and output row.
    let mut y = unsafe { unwritten(g.n * cout * plane) };
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

/// Grad-input as `col2im(Wᵀ · gY)`: per block ([`blocking`]) of one task's images,
/// `gcols (C·k·k, cols) = Wᵀ · gY` with `Wᵀ` stored row-major (the GEMM then reads both
/// operands along rows; reading `W` transposed was slower for the deep layers), then col2im
/// image by image; a pointwise image's gradient is the product itself. Images are
/// independent, so any split gives the same bits.
pub(super) fn grad_input(w: &[f32], gy: &[f32], g: ConvGeom, cout: usize) -> Vec<f32> {
    let (plane, wo, ho) = (g.ho() * g.wo(), g.wo(), g.ho());
    let (rl, chw) = (g.row_len(), g.c * g.h * g.w);
    let bl = blocking(&g);
    let max_cols = bl.imgs * bl.rows * wo;
    let wt = transpose(w, cout, rl);
    let direct = bl.imgs == 1 && is_pointwise(&g);
    let mut gx = zeros(g.n * chw);
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

/// Weight gradient over im2col columns: `gWᵀ (C·k·k, Cout) += cols · gYᵀ` over all images
/// (a product as tall as the taps: `gW += gY · colsᵀ`, as tall as the output channels, ran the
/// 32×32 layers' 64-row products far slower), the taps split across tasks so that the large
/// weights of the deep layers need no partial copies, and the images split too where the
/// weight is small (the stem, 1×1 convolutions). Each task im2cols only its own taps, in blocks of about
/// [`knobs::Knobs::target_gw_cols`] columns, and multiplies them on the wide tile where it
/// applies (3×3 or larger, 64+ taps, output channels a multiple of 64: `gYᵀ` is laid out in
/// 64-channel panels once per layer), else on the `gemm` crate.
pub(super) fn grad_weight(x: &[f32], gy: &[f32], g: ConvGeom, cout: usize) -> Vec<f32> {
    let (plane, wo, ho) = (g.ho() * g.wo(), g.wo(), g.ho());
    let rl = g.row_len();
    // The wide tile on the im2col columns where it applies: 64-channel panels, 64+ taps, not
    // 1×1 (there the `gemm` crate was faster, bench/README.md).
    let wide = wide::gw_applies(&g, cout) && g.k > 1;
    let bl = blocking_for(&g, knobs::get().target_gw_cols);
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

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
