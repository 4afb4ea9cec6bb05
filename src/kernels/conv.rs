//! 2-D convolution on CPU as im2col + GEMM.
//!
//! `cols = im2col(x)`: `(N, C, H, W)` → `(C·k·k, N·Ho·Wo)` (one row per kernel tap, in the
//! weight's (c, ky, kx) order, so every copy is a contiguous run of an image row), then
//! `y = W · cols` `(Cout, N·Ho·Wo)` → `(N, Cout, Ho, Wo)`.
//! The backward of im2col is col2im (scatter-add), whose backward is im2col again, so candle's
//! autograd turns both conv gradients into GEMMs.

use super::f32_slice;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
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

/// `(N, C, H, W)` → `(C·k·k, N·Ho·Wo)`: row `(c, ky, kx)` holds, for every output pixel, the
/// input pixel that kernel tap multiplies (0 in the padding).
fn im2col_cpu(x: &[f32], g: ConvGeom) -> Vec<f32> {
    let (ho, wo, rl) = (g.ho(), g.wo(), g.row_len());
    let plane = ho * wo;
    let mut out = vec![0f32; rl * g.n * plane];
    out.par_chunks_mut(g.n * plane).enumerate().for_each(|(j, row)| {
        let (c, ky, kx) = (j / (g.k * g.k), (j / g.k) % g.k, j % g.k);
        let (oy0, oy1) = valid_range(g.h, ho, ky, &g);
        let (ox0, ox1) = valid_range(g.w, wo, kx, &g);
        for n in 0..g.n {
            let xc = &x[(n * g.c + c) * g.h * g.w..(n * g.c + c + 1) * g.h * g.w];
            let dst = &mut row[n * plane..(n + 1) * plane];
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
    });
    out
}

/// Adjoint of [`im2col_cpu`]: `(C·k·k, N·Ho·Wo)` → `(N, C, H, W)`, summing overlapping taps.
fn col2im_cpu(cols: &[f32], g: ConvGeom) -> Vec<f32> {
    let (ho, wo) = (g.ho(), g.wo());
    let plane = ho * wo;
    let hw = g.h * g.w;
    // Parallel over channels: channel c's planes of every image are written by one task.
    let per_c: Vec<Vec<f32>> = (0..g.c)
        .into_par_iter()
        .map(|c| {
            let mut acc = vec![0f32; g.n * hw];
            for ky in 0..g.k {
                let (oy0, oy1) = valid_range(g.h, ho, ky, &g);
                for kx in 0..g.k {
                    let (ox0, ox1) = valid_range(g.w, wo, kx, &g);
                    let j = (c * g.k + ky) * g.k + kx;
                    let row = &cols[j * g.n * plane..(j + 1) * g.n * plane];
                    for n in 0..g.n {
                        let src = &row[n * plane..(n + 1) * plane];
                        let xc = &mut acc[n * hw..(n + 1) * hw];
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
            }
            acc
        })
        .collect();
    let mut out = vec![0f32; g.n * g.c * hw];
    for (c, acc) in per_c.iter().enumerate() {
        for n in 0..g.n {
            out[(n * g.c + c) * hw..(n * g.c + c + 1) * hw].copy_from_slice(&acc[n * hw..(n + 1) * hw]);
        }
    }
    out
}

struct Im2Col(ConvGeom);
struct Col2Im(ConvGeom);

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let out = im2col_cpu(f32_slice(s, l)?, g);
        Ok((CpuStorage::F32(out), Shape::from((g.row_len(), g.n * g.ho() * g.wo()))))
    }
    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1(Col2Im(self.0))?))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let out = col2im_cpu(f32_slice(s, l)?, g);
        Ok((CpuStorage::F32(out), Shape::from((g.n, g.c, g.h, g.w))))
    }
    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1(Im2Col(self.0))?))
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
    let cols = x.contiguous()?.apply_op1(Im2Col(g))?; // (C·k·k, N·Ho·Wo)
    let y = weight.reshape((cout, c * k * k))?.matmul(&cols)?; // (Cout, N·Ho·Wo)
    y.reshape((cout, n, g.ho() * g.wo()))?
        .transpose(0, 1)?
        .contiguous()?
        .reshape((n, cout, g.ho(), g.wo()))
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

    /// col2im is the adjoint of im2col: <im2col(x), y> = <x, col2im(y)>.
    #[test]
    fn col2im_is_adjoint_of_im2col() {
        let g = ConvGeom {
            n: 2,
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
        let lhs: f64 = im2col_cpu(&x, g).iter().zip(&y).map(|(a, b)| (*a as f64) * (*b as f64)).sum();
        let rhs: f64 = x.iter().zip(&col2im_cpu(&y, g)).map(|(a, b)| (*a as f64) * (*b as f64)).sum();
        assert!((lhs - rhs).abs() < 1e-4, "{lhs} vs {rhs}");
    }
}
