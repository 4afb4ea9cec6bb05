//! 2-D convolution on CPU as per-image im2col + GEMM, one autograd node.
//!
//! For each image, `cols = im2col(x_i)` `(C·k·k, Ho·Wo)` (one row per kernel tap, in the
//! weight's (c, ky, kx) order, so every copy is a contiguous run of an image row) goes into a
//! buffer that stays in cache, and `y_i = W · cols` lands directly in NCHW. The backward
//! recomputes `cols` per image: `gW += gy_i · colsᵀ`, `gx_i = col2im(Wᵀ · gy_i)`. Nothing of
//! the size of the whole batch's column matrix is ever allocated, and autograd sees one node
//! (a batch-wide im2col node made candle allocate, zero and add a 9×-activation gradient).

use super::f32_slice;
use candle_core::{CpuStorage, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

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

/// One image's im2col into `cols` `(C·k·k, Ho·Wo)`, rows `ld` apart (`ld = B·Ho·Wo` when `B`
/// images share one column matrix, this image's block starting at `cols[0]`). Only in-range
/// taps are written, so the padding entries keep whatever `cols` held: callers zero the buffer
/// once and reuse it for images of the same geometry.
fn im2col_one(x: &[f32], g: &ConvGeom, cols: &mut [f32], ld: usize) {
    let (ho, wo) = (g.ho(), g.wo());
    let plane = ho * wo;
    let hw = g.h * g.w;
    for j in 0..g.row_len() {
        let dst = &mut cols[j * ld..j * ld + plane];
        let (c, ky, kx) = (j / (g.k * g.k), (j / g.k) % g.k, j % g.k);
        let (oy0, oy1) = valid_range(g.h, ho, ky, g);
        let (ox0, ox1) = valid_range(g.w, wo, kx, g);
        let xc = &x[c * hw..(c + 1) * hw];
        for oy in oy0..oy1 {
            let iy = oy * g.stride + ky - g.pad;
            let src = &xc[iy * g.w..(iy + 1) * g.w];
            let d = &mut dst[oy * wo..(oy + 1) * wo];
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

/// Adjoint of [`im2col_one`]: adds `cols` `(C·k·k, Ho·Wo)` (rows `ld` apart) into one image
/// `gx` `(C, H, W)`.
fn col2im_one(cols: &[f32], g: &ConvGeom, gx: &mut [f32], ld: usize) {
    let (ho, wo) = (g.ho(), g.wo());
    let plane = ho * wo;
    let hw = g.h * g.w;
    for j in 0..g.row_len() {
        let src = &cols[j * ld..j * ld + plane];
        let (c, ky, kx) = (j / (g.k * g.k), (j / g.k) % g.k, j % g.k);
        let (oy0, oy1) = valid_range(g.h, ho, ky, g);
        let (ox0, ox1) = valid_range(g.w, wo, kx, g);
        let xc = &mut gx[c * hw..(c + 1) * hw];
        for oy in oy0..oy1 {
            let iy = oy * g.stride + ky - g.pad;
            let s = &src[oy * wo..(oy + 1) * wo];
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

/// A 1×1, stride-1, unpadded convolution reads the image itself as its column matrix.
fn is_pointwise(g: &ConvGeom) -> bool {
    g.k == 1 && g.stride == 1 && g.pad == 0
}

/// Columns per GEMM worth aiming for: below it (the deep layers' 8×8 and 4×4 outputs) several
/// images share one column matrix, since a GEMM with a narrow N runs far below peak.
const GEMM_MIN_N: usize = 256;

/// Images per GEMM for this geometry (1 when one image's output plane is wide enough).
fn images_per_gemm(g: &ConvGeom) -> usize {
    GEMM_MIN_N.div_ceil(g.ho() * g.wo()).clamp(1, g.n.max(1))
}

/// Scratch of one task: the column matrix of a block of `b` images, `(C·k·k, b·Ho·Wo)`, zeroed
/// once (padding taps are never written), plus a `(Cout, b·Ho·Wo)` output/gradient block.
struct Scratch {
    cols: Vec<f32>,
    block: Vec<f32>,
}

impl Scratch {
    fn new(g: &ConvGeom, cout: usize, b: usize) -> Self {
        let plane = g.ho() * g.wo();
        let direct = b == 1 && is_pointwise(g);
        Self {
            cols: if direct { Vec::new() } else { vec![0f32; g.row_len() * b * plane] },
            block: if b == 1 { Vec::new() } else { vec![0f32; cout * b * plane] },
        }
    }

    /// The column matrix of images `x[i0..i0+nb]` (`nb ≤ b`), rows `b·Ho·Wo` apart whatever
    /// `nb` (so the never-written padding entries stay where they were zeroed): the image itself
    /// for a single pointwise image, else im2col into the buffer.
    fn columns<'a>(&'a mut self, x: &'a [f32], g: &ConvGeom, i0: usize, nb: usize, b: usize) -> &'a [f32] {
        let (chw, plane) = (g.c * g.h * g.w, g.ho() * g.wo());
        if b == 1 && is_pointwise(g) {
            return &x[i0 * chw..(i0 + 1) * chw];
        }
        for j in 0..nb {
            let i = i0 + j;
            im2col_one(&x[i * chw..(i + 1) * chw], g, &mut self.cols[j * plane..], b * plane);
        }
        &self.cols
    }
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

/// Row-major `dst (m, n) = [dst +] lhs · rhs`, single-threaded (callers parallelise over
/// images). Strides are `(row, col)` pairs so that transposed operands need no copy.
#[allow(clippy::too_many_arguments)]
fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    accumulate: bool,
    lhs: &[f32],
    lhs_rc: (usize, usize),
    rhs: &[f32],
    rhs_rc: (usize, usize),
) {
    sgemm_ld(m, n, k, dst, n, accumulate, lhs, lhs_rc, rhs, rhs_rc)
}

/// [`sgemm`] into a `dst` whose rows are `ld` apart.
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
    debug_assert!(m == 0 || n == 0 || dst.len() >= (m - 1) * ld + n);
    debug_assert!(m == 0 || k == 0 || lhs.len() > (m - 1) * lhs_rc.0 + (k - 1) * lhs_rc.1);
    debug_assert!(k == 0 || n == 0 || rhs.len() > (k - 1) * rhs_rc.0 + (n - 1) * rhs_rc.1);
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

/// Forward: per block of `b` images ([`images_per_gemm`]), `Y (Cout, b·Ho·Wo) = W (Cout, C·k·k)
/// · cols`, written straight into NCHW when `b = 1`. The buffers are per task and stay in cache.
fn conv_fwd_cpu(x: &[f32], w: &[f32], g: ConvGeom, cout: usize) -> Vec<f32> {
    let plane = g.ho() * g.wo();
    let rl = g.row_len();
    let b = images_per_gemm(&g);
    let mut y = vec![0f32; g.n * cout * plane];
    y.par_chunks_mut(b * cout * plane).enumerate().for_each_init(
        || Scratch::new(&g, cout, b),
        |sc, (blk, yb)| {
            let nb = yb.len() / (cout * plane);
            let i0 = blk * b;
            if b == 1 {
                let c = sc.columns(x, &g, i0, 1, 1);
                sgemm(cout, plane, rl, yb, false, w, (rl, 1), c, (plane, 1));
            } else {
                let mut block = std::mem::take(&mut sc.block);
                let c = sc.columns(x, &g, i0, nb, b);
                // A short last block uses the first nb·plane columns of each row.
                sgemm(cout, nb * plane, rl, &mut block, false, w, (rl, 1), c, (b * plane, 1));
                scatter(&block, cout, plane, nb, yb);
                sc.block = block;
            }
        },
    );
    y
}

/// Images per backward task: the batch is cut into at most this many fixed chunks, whatever the
/// number of threads, and their weight gradients are summed in chunk order, so a run gives the
/// same bits on any machine.
const BWD_CHUNKS: usize = 8;

/// Backward, per block of `b` images ([`images_per_gemm`]): `gW += gY · colsᵀ` (one
/// accumulator per chunk of images, summed in order at the end) and `gX = col2im(Wᵀ · gY)`;
/// either gradient is skipped when not wanted (the stem's input is the image). The column
/// matrices are never materialised for the whole batch and never enter autograd.
fn conv_bwd_cpu(
    x: &[f32],
    w: &[f32],
    gy: &[f32],
    g: ConvGeom,
    cout: usize,
    want_gx: bool,
    want_gw: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let plane = g.ho() * g.wo();
    let (rl, chw) = (g.row_len(), g.c * g.h * g.w);
    let b = images_per_gemm(&g);
    // Fixed chunks (independent of the thread count), each a whole number of blocks.
    let per_chunk = g.n.div_ceil(BWD_CHUNKS).max(1).next_multiple_of(b);
    let mut gx = vec![0f32; if want_gx { g.n * chw } else { 0 }];
    let chunks: Vec<(usize, &mut [f32])> = if want_gx {
        gx.chunks_mut(chw * per_chunk).enumerate().collect()
    } else {
        (0..g.n.div_ceil(per_chunk)).map(|ci| (ci, &mut [][..])).collect()
    };
    let partial: Vec<Vec<f32>> = chunks
        .into_par_iter()
        .map(|(ci, gx_chunk)| {
            let mut gw = vec![0f32; if want_gw { cout * rl } else { 0 }];
            let mut sc = Scratch::new(&g, cout, b);
            // The scratch's (Cout, b·plane) block holds the gathered gY here.
            let mut gy_buf = std::mem::take(&mut sc.block);
            let mut gcols = vec![
                0f32;
                if want_gx && !(b == 1 && is_pointwise(&g)) {
                    rl * b * plane
                } else {
                    0
                }
            ];
            let (lo, hi) = (ci * per_chunk, ((ci + 1) * per_chunk).min(g.n));
            for i0 in (lo..hi).step_by(b) {
                let nb = b.min(hi - i0);
                let cols_n = nb * plane;
                // gY of the block as (Cout, nb·plane), rows nb·plane apart.
                let gy_block: &[f32] = if b == 1 {
                    &gy[i0 * cout * plane..(i0 + 1) * cout * plane]
                } else {
                    gather(gy, cout, plane, i0, nb, &mut gy_buf);
                    &gy_buf
                };
                if want_gw {
                    let c = sc.columns(x, &g, i0, nb, b);
                    // gW (Cout, rl) += gY (Cout, nb·plane) · colsᵀ (nb·plane, rl)
                    sgemm(cout, rl, cols_n, &mut gw, true, gy_block, (cols_n, 1), c, (1, b * plane));
                }
                if want_gx {
                    let gx_off = (i0 - lo) * chw;
                    if b == 1 && is_pointwise(&g) {
                        // gX_i (C, plane) = Wᵀ (C, Cout) · gY_i
                        sgemm(
                            rl,
                            plane,
                            cout,
                            &mut gx_chunk[gx_off..gx_off + chw],
                            false,
                            w,
                            (1, rl),
                            gy_block,
                            (plane, 1),
                        );
                    } else {
                        // gcols (rl, nb·plane), rows b·plane apart = Wᵀ · gY
                        sgemm_ld(rl, cols_n, cout, &mut gcols, b * plane, false, w, (1, rl), gy_block, (cols_n, 1));
                        for j in 0..nb {
                            let gxi = &mut gx_chunk[gx_off + j * chw..gx_off + (j + 1) * chw];
                            col2im_one(&gcols[j * plane..], &g, gxi, b * plane);
                        }
                    }
                }
            }
            gw
        })
        .collect();
    let gw = want_gw.then(|| {
        let mut chunks = partial.into_iter();
        let mut gw = chunks.next().unwrap_or_else(|| vec![0f32; cout * rl]);
        for p in chunks {
            gw.iter_mut().zip(&p).for_each(|(a, b)| *a += b);
        }
        gw
    });
    (want_gx.then_some(gx), gw)
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
        a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
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

    /// The gradients do not depend on the number of threads (fixed chunks, summed in order).
    #[test]
    fn backward_bits_do_not_depend_on_threads() {
        let g = ConvGeom {
            n: 13,
            c: 5,
            h: 9,
            w: 7,
            k: 3,
            stride: 1,
            pad: 1,
        };
        let cout = 6;
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

    /// col2im is the adjoint of im2col: <im2col(x), y> = <x, col2im(y)>.
    #[test]
    fn col2im_is_adjoint_of_im2col() {
        let g = ConvGeom {
            n: 1,
            c: 3,
            h: 6,
            w: 5,
            k: 3,
            stride: 2,
            pad: 1,
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let x: Vec<f32> = (0..g.n * g.c * g.h * g.w).map(|_| rng.random_range(-1.0..1.0)).collect();
        let y: Vec<f32> = (0..g.n * g.ho() * g.wo() * g.row_len())
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let mut cols = vec![0f32; y.len()];
        im2col_one(&x, &g, &mut cols, g.ho() * g.wo());
        let mut back = vec![0f32; x.len()];
        col2im_one(&y, &g, &mut back, g.ho() * g.wo());
        let lhs: f64 = cols.iter().zip(&y).map(|(a, b)| (*a as f64) * (*b as f64)).sum();
        let rhs: f64 = x.iter().zip(&back).map(|(a, b)| (*a as f64) * (*b as f64)).sum();
        assert!((lhs - rhs).abs() < 1e-4, "{lhs} vs {rhs}");
    }
}
