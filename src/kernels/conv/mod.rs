//! 2-D convolution without bias as one autograd node ([`conv2d`]): on CPU our kernels, whose
//! backward computes both gradients in one pass and never builds the whole batch's column
//! matrix; elsewhere, or with the kernels off, candle's `Tensor::conv2d`. This file holds the
//! op and the dispatch between the algorithms, each in a submodule of its own:
//!
//! - `winograd`: 3×3 stride-1 padding-1 layers with 64+ channels in and out on planes of 8×8
//!   and more, with AVX-512: forward and grad-input by Winograd F(2×2, 3×3) (2.25x fewer
//!   multiplies), the weight gradient by F(3×3, 2×2) on 16×16+ planes.
//! - `implicit`: other stride-1 convolutions on planes of 256+ outputs, with AVX-512: forward
//!   and grad-input as an implicit GEMM (the column matrix's rows read in place from a
//!   zero-padded image), the weight gradient too on planes of 512+ outputs.
//! - `im2col`: everything else — im2col + GEMM in cache-sized blocks, grad-input
//!   `col2im(Wᵀ · gY)`, weight gradient `cols · gYᵀ`.
//! - `wide`: the products on the 6×64 wide tile that the three share (64-channel multiples).
//! - `split`: how the work is cut into GEMM blocks and into the weight gradient's fixed tasks
//!   (the same bits whatever the thread count).
//! - `geometry`: [`ConvGeom`] and what follows from the shape alone.
//! - [`knobs`]: the process-wide switches and widths the A/B examples change.
//! - [`parts`]: the three passes on raw slices, for the benchmarks.
//! - `reference` (tests only): the direct f64 convolution and weight gradient.
//!
//! The grad-input of a stride-1 convolution runs as the forward of `gY` with the flipped
//! weight wherever that forward takes Winograd or the implicit GEMM (then no col2im). The
//! microkernels are [`crate::kernels::packed`]'s and the `gemm` crate's. Imports run one way:
//! this file → the algorithms → `wide`, `split` → `geometry`, `knobs`.

mod geometry;
mod im2col;
mod implicit;
pub mod knobs;
#[cfg(test)]
mod reference;
mod split;
mod wide;
mod winograd;

pub use geometry::ConvGeom;

use crate::kernels::cpu::{f32_slice, use_cpu_kernels};
use candle_core::{CpuStorage, Layout, Result, Shape, Storage, Tensor};
use geometry::grad_input_as_conv;

/// Convolution without bias: `x (N, C, H, W)`, `weight (Cout, C, k, k)` → `(N, Cout, Ho, Wo)`,
/// `stride` and `pad` on both axes. On CPU one node of our kernels; elsewhere, or with the
/// kernels off ([`crate::kernels::set_enabled`]), candle's `conv2d`.
pub fn conv2d(x: &Tensor, weight: &Tensor, stride: usize, pad: usize) -> Result<Tensor> {
    if !use_cpu_kernels(x.device()) {
        return x.conv2d(weight, pad, stride, 1, 1);
    }
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

/// Forward `y = conv(x, w)` on NCHW slices, `w (Cout, C·k·k)` row-major: Winograd, else the
/// implicit GEMM, else im2col + GEMM, the first that applies.
fn conv_fwd_cpu(x: &[f32], w: &[f32], g: ConvGeom, cout: usize) -> Vec<f32> {
    if winograd::applies(&g, cout) {
        winograd::conv3x3(x, w, g, cout)
    } else if implicit::applies_fwd(&g) {
        implicit::forward(x, w, g, cout)
    } else {
        im2col::forward(x, w, g, cout)
    }
}

/// Grad-input: as the forward of `gY` with the flipped, transposed weight when that forward
/// takes Winograd or the implicit GEMM, else `col2im(Wᵀ · gY)`.
fn conv_grad_input_cpu(w: &[f32], gy: &[f32], g: ConvGeom, cout: usize) -> Vec<f32> {
    let as_conv = grad_input_as_conv(&g, cout).filter(|gt| winograd::applies(gt, g.c) || implicit::applies_fwd(gt));
    let Some(gt) = as_conv else {
        return im2col::grad_input(w, gy, g, cout);
    };
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
    conv_fwd_cpu(gy, &wf, gt, g.c)
}

/// Weight gradient `gW (Cout, C·k·k)`: Winograd, else the implicit GEMM, else over im2col
/// columns, the first that applies.
fn conv_grad_weight_cpu(x: &[f32], gy: &[f32], g: ConvGeom, cout: usize) -> Vec<f32> {
    if winograd::applies_gw(&g, cout) {
        winograd::grad_weight(x, gy, g, cout)
    } else if implicit::applies_gw(&g, cout) {
        implicit::grad_weight(x, gy, g, cout)
    } else {
        im2col::grad_weight(x, gy, g, cout)
    }
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

/// The kernel's three passes on raw NCHW slices, for `moco bench step`'s per-op breakdown and
/// the A/B examples: `y = conv(x, w)`, `gx` alone, `gW` alone (the training step runs both
/// gradients in one pass).
pub mod parts {
    use super::*;
    /// Forward: `y (N, Cout, Ho, Wo)` from `x (N, C, H, W)` and `w (Cout, C, k, k)`.
    pub fn forward(x: &[f32], w: &[f32], g: ConvGeom, cout: usize) -> Vec<f32> {
        conv_fwd_cpu(x, w, g, cout)
    }
    /// Gradient of the input only, `gx (N, C, H, W)` from `gy (N, Cout, Ho, Wo)`.
    pub fn grad_input(x: &[f32], w: &[f32], gy: &[f32], g: ConvGeom, cout: usize) -> Vec<f32> {
        conv_bwd_cpu(x, w, gy, g, cout, true, false).0.unwrap_or_default()
    }
    /// Gradient of the weight only, `gW (Cout, C, k, k)` from `x` and `gy`.
    pub fn grad_weight(x: &[f32], w: &[f32], gy: &[f32], g: ConvGeom, cout: usize) -> Vec<f32> {
        conv_bwd_cpu(x, w, gy, g, cout, false, true).1.unwrap_or_default()
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
}
