//! Train-mode BatchNorm2d with statistics per group of images (SplitBatchNorm), as one op
//! that picks its path ([`forward_train`]): on CPU one fused node, optionally with the ReLU or
//! the residual add + ReLU that follows it ([`Epilogue`]); elsewhere, or with the kernels off,
//! candle's composed ops.
//!
//! Forward: per (group g, channel c), mean μ and biased variance σ² over the group's N/G
//! images and all pixels (m values), `y = (x − μ)·w/√(σ²+ε) + b`, in one parallel pass per
//! channel. Backward, with x̂ = (x − μ)/√(σ²+ε):
//! `dx = w/(m·√(σ²+ε)) · (m·dy − Σdy − x̂·Σ(dy·x̂))`, `dw = Σ_g Σ(dy·x̂)`, `db = Σ_g Σdy`.
//! The group statistics are handed back to the caller for the running averages.

use super::cpu::{f32_slice, tensor_vec, unwritten, use_cpu_kernels, SendPtr};
use super::elementwise::{add_relu, mask_by_output};
use candle_core::{CpuStorage, CustomOp3, Device, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// ε of PyTorch's `BatchNorm2d` (`eps=1e-5`), the one the model's layers use.
pub const BN_EPS: f64 = 1e-5;

/// Per (group, channel) statistics of a train-mode forward, `[g * C + c]`.
#[derive(Debug, Clone, Default)]
pub struct GroupStats {
    /// Mean of each (group, channel) over the group's images and pixels.
    pub mean: Vec<f32>,
    /// Biased variance (divided by the count, not count − 1) of each (group, channel).
    pub var: Vec<f32>,
}

/// What the BN node computes after the affine map, in the same pass on CPU.
#[derive(Debug, Clone, Copy)]
pub enum Epilogue<'a> {
    /// `bn(x)` alone.
    None,
    /// `max(0, bn(x))`.
    Relu,
    /// `max(0, bn(x) + residual)`: a residual block's join (the BN output is never a tensor of
    /// its own on CPU).
    AddRelu(&'a Tensor),
}

/// Train-mode BN of `x (N, C, H, W)` with statistics per group of `N / splits` images, then
/// `epilogue`: `y (N, C, H, W)`, the group means and the biased group variances `(splits, C)`.
/// On CPU one fused node; elsewhere, or with the kernels off ([`super::set_enabled`]),
/// candle's composed ops.
pub fn forward_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    splits: usize,
    eps: f64,
    epilogue: Epilogue,
) -> Result<(Tensor, Tensor, Tensor)> {
    if use_cpu_kernels(x.device()) {
        let c = x.dim(1)?;
        let (y, st) = match epilogue {
            Epilogue::None => batch_norm_train(x, weight, bias, splits, eps)?,
            Epilogue::Relu => batch_norm_relu_train(x, weight, bias, splits, eps)?,
            Epilogue::AddRelu(r) => batch_norm_add_relu_train(x, weight, bias, r, splits, eps)?,
        };
        let (mean, var) = group_stats(st, c, x.device())?;
        Ok((y, mean, var))
    } else {
        let (y, mean, var) = composed_train(x, weight, bias, splits, eps)?;
        let y = match epilogue {
            Epilogue::None => y,
            Epilogue::Relu => y.relu()?,
            Epilogue::AddRelu(r) => add_relu(&y, r)?,
        };
        Ok((y, mean, var))
    }
}

/// The fused kernels' group statistics as `(G, C)` tensors (means, biased variances).
fn group_stats(st: GroupStats, c: usize, dev: &Device) -> Result<(Tensor, Tensor)> {
    let g = st.mean.len() / c.max(1);
    Ok((Tensor::from_vec(st.mean, (g, c), dev)?, Tensor::from_vec(st.var, (g, c), dev)?))
}

/// Train-mode BN from candle ops (any device): returns `y`, group means and biased group
/// variances `(G, C)`. The CPU path runs the fused kernel instead; the tests compare the two.
fn composed_train(x: &Tensor, weight: &Tensor, bias: &Tensor, g: usize, eps: f64) -> Result<(Tensor, Tensor, Tensor)> {
    let (n, c, h, w) = x.dims4()?;
    let xg = x.reshape((g, n / g, c, h * w))?;
    let mean = xg.mean_keepdim(3)?.mean_keepdim(1)?; // (G, 1, C, 1)
    let xc = xg.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(3)?.mean_keepdim(1)?; // biased, (G, 1, C, 1)
    let inv = (var.clone() + eps)?.sqrt()?.recip()?;
    let y = xc
        .broadcast_mul(&inv)?
        .broadcast_mul(&weight.reshape((1, 1, c, 1))?)?
        .broadcast_add(&bias.reshape((1, 1, c, 1))?)?
        .reshape((n, c, h, w))?;
    Ok((y, mean.reshape((g, c))?, var.reshape((g, c))?))
}

/// Σx in f64 from 8 f32 lanes per chunk of 256 (vectorises; exact enough for BN).
fn sum(xs: &[f32]) -> f64 {
    xs.chunks(256)
        .map(|ch| {
            let mut acc = [0f32; 8];
            let mut it = ch.chunks_exact(8);
            for c in &mut it {
                for i in 0..8 {
                    acc[i] += c[i];
                }
            }
            acc.iter().sum::<f32>() as f64 + it.remainder().iter().map(|&v| v as f64).sum::<f64>()
        })
        .sum()
}

/// Σ(x−μ)² like [`sum`].
fn sum_sq_dev(xs: &[f32], mean: f32) -> f64 {
    xs.chunks(256)
        .map(|ch| {
            let mut acc = [0f32; 8];
            let mut it = ch.chunks_exact(8);
            for c in &mut it {
                for i in 0..8 {
                    let d = c[i] - mean;
                    acc[i] += d * d;
                }
            }
            acc.iter().sum::<f32>() as f64 + it.remainder().iter().map(|&v| ((v - mean) as f64).powi(2)).sum::<f64>()
        })
        .sum()
}

/// Σdy′ and Σdy′·(x−μ) like [`sum`], where `dy′ = eff(dy, x)` (dy itself, or dy masked by
/// the fused ReLU).
fn sum_dy_dev(dy: &[f32], xs: &[f32], mean: f32, eff: impl Fn(f32, f32) -> f32) -> (f64, f64) {
    let (mut s1, mut s2) = (0f64, 0f64);
    for (dch, xch) in dy.chunks(256).zip(xs.chunks(256)) {
        let (mut a, mut b) = ([0f32; 8], [0f32; 8]);
        let (mut di, mut xi) = (dch.chunks_exact(8), xch.chunks_exact(8));
        for (d, x) in (&mut di).zip(&mut xi) {
            for i in 0..8 {
                let e = eff(d[i], x[i]);
                a[i] += e;
                b[i] += e * (x[i] - mean);
            }
        }
        s1 += a.iter().sum::<f32>() as f64;
        s2 += b.iter().sum::<f32>() as f64;
        for (d, x) in di.remainder().iter().zip(xi.remainder()) {
            let e = eff(*d, *x);
            s1 += e as f64;
            s2 += e as f64 * (*x - mean) as f64;
        }
    }
    (s1, s2)
}

/// The forward pass: `y = [max(0,] (x − μ)·w/√(σ²+ε) + b [+ r] [)]` with per-(group, channel)
/// statistics, one parallel task per channel.
#[allow(clippy::too_many_arguments)]
fn bn_fwd(
    x: &[f32],
    wt: &[f32],
    bs: &[f32],
    residual: Option<&[f32]>,
    (n, c, hw): (usize, usize, usize),
    g: usize,
    eps: f64,
    relu: bool,
) -> Result<(Vec<f32>, GroupStats)> {
    if g == 0 || n % g != 0 {
        candle_core::bail!("batch_norm_train: batch {n} is not a multiple of {g} splits");
    }
    let per = n / g;
    let m = (per * hw) as f64;
    // SAFETY: the tasks below write every (image, channel) plane of y: each channel's task
    // covers all groups, and the groups all images (n % g == 0, checked above).
    let mut y = unsafe { unwritten(x.len()) };
    let yp = SendPtr(y.as_mut_ptr());
    let stats: Vec<Vec<(f32, f32)>> = (0..c)
        .into_par_iter()
        .map(|ch| {
            #[allow(clippy::redundant_locals)] // capture the Send wrapper, not its raw field
            let yp = yp;
            (0..g)
                .map(|gi| {
                    let planes = || (gi * per..(gi + 1) * per).map(|i| (i * c + ch) * hw);
                    let mean = planes().map(|o| sum(&x[o..o + hw])).sum::<f64>() / m;
                    let var = planes().map(|o| sum_sq_dev(&x[o..o + hw], mean as f32)).sum::<f64>() / m;
                    let inv = 1.0 / (var + eps).sqrt();
                    let scale = (wt[ch] as f64 * inv) as f32;
                    let shift = (bs[ch] as f64 - mean * wt[ch] as f64 * inv) as f32;
                    for o in planes() {
                        // SAFETY: each (image, channel) plane is written by exactly one task.
                        let dst = unsafe { std::slice::from_raw_parts_mut(yp.0.add(o), hw) };
                        let src = &x[o..o + hw];
                        match (residual, relu) {
                            (Some(r), true) => dst
                                .iter_mut()
                                .zip(src.iter().zip(&r[o..o + hw]))
                                .for_each(|(d, (&v, &rv))| *d = (v * scale + shift + rv).max(0.0)),
                            (Some(r), false) => dst
                                .iter_mut()
                                .zip(src.iter().zip(&r[o..o + hw]))
                                .for_each(|(d, (&v, &rv))| *d = v * scale + shift + rv),
                            (None, true) => dst.iter_mut().zip(src).for_each(|(d, &v)| *d = (v * scale + shift).max(0.0)),
                            (None, false) => dst.iter_mut().zip(src).for_each(|(d, &v)| *d = v * scale + shift),
                        }
                    }
                    (mean as f32, var as f32)
                })
                .collect()
        })
        .collect();
    let mut out = GroupStats {
        mean: vec![0.0; g * c],
        var: vec![0.0; g * c],
    };
    for (ch, per_group) in stats.iter().enumerate() {
        for (gi, &(mu, v)) in per_group.iter().enumerate() {
            out.mean[gi * c + ch] = mu;
            out.var[gi * c + ch] = v;
        }
    }
    Ok((y, out))
}

struct BnTrain {
    splits: usize,
    eps: f64,
    /// ReLU fused after the affine map (`y = max(0, bn(x))`).
    relu: bool,
    stats: Arc<Mutex<GroupStats>>,
}

fn dims(l: &Layout) -> Result<(usize, usize, usize)> {
    let (n, c, h, w) = l.shape().dims4()?;
    Ok((n, c, h * w))
}

impl CustomOp3 for BnTrain {
    fn name(&self) -> &'static str {
        "batch_norm_train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (y, stats) = bn_fwd(
            f32_slice(s1, l1)?,
            f32_slice(s2, l2)?,
            f32_slice(s3, l3)?,
            None,
            dims(l1)?,
            self.splits,
            self.eps,
            self.relu,
        )?;
        *self.stats.lock().unwrap() = stats;
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        wt: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (n, c, h, w) = x.dims4()?;
        let stats = self.stats.lock().unwrap().clone();
        let (wv, bv) = (tensor_vec(wt)?, tensor_vec(bias)?);
        let (xs, xl) = x.storage_and_layout();
        let (gs, gl) = grad.storage_and_layout();
        let (Storage::Cpu(xs), Storage::Cpu(gs)) = (&*xs, &*gs) else {
            candle_core::bail!("batch_norm_train: CPU only")
        };
        let (dx, dw, db) = bn_bwd(
            f32_slice(xs, xl)?,
            f32_slice(gs, gl)?,
            &wv,
            &bv,
            &stats,
            (n, c, h * w),
            self.splits,
            self.eps,
            self.relu,
        );
        let dev = Device::Cpu;
        Ok((
            Some(Tensor::from_vec(dx, (n, c, h, w), &dev)?),
            Some(Tensor::from_vec(dw, c, &dev)?),
            Some(Tensor::from_vec(db, c, &dev)?),
        ))
    }
}

/// The backward pass, with x̂ = (x − μ)/√(σ²+ε) and `dy′` = dy (masked by the fused ReLU, whose
/// output is recomputed from x): `dx = w/(m·√(σ²+ε)) · (m·dy′ − Σdy′ − x̂·Σ(dy′·x̂))`,
/// `dw = Σ_g Σ(dy′·x̂)`, `db = Σ_g Σdy′`. One parallel task per channel.
#[allow(clippy::too_many_arguments)]
fn bn_bwd(
    xv: &[f32],
    dy: &[f32],
    wv: &[f32],
    bv: &[f32],
    stats: &GroupStats,
    (n, c, hw): (usize, usize, usize),
    g: usize,
    eps: f64,
    relu: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    // The forward checked this; the planes below cover dx only if it holds.
    assert!(g > 0 && n % g == 0, "bn_bwd: batch {n} is not a multiple of {g} splits");
    let per = n / g;
    let m = (per * hw) as f64;
    // SAFETY: as in bn_fwd, every (image, channel) plane of dx is written by its channel's task.
    let mut dx = unsafe { unwritten(xv.len()) };
    let dp = SendPtr(dx.as_mut_ptr());
    let sums: Vec<(f32, f32)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            #[allow(clippy::redundant_locals)] // capture the Send wrapper, not its raw field
            let dp = dp;
            let (mut dw, mut db) = (0f64, 0f64);
            for gi in 0..g {
                let mean = stats.mean[gi * c + ch] as f64;
                let inv = 1.0 / (stats.var[gi * c + ch] as f64 + eps).sqrt();
                let planes = || (gi * per..(gi + 1) * per).map(|i| (i * c + ch) * hw);
                // With the fused ReLU, dy′ = dy where the output was positive, else 0
                // (PyTorch's threshold_backward); the output is recomputed from x.
                let scale = (wv[ch] as f64 * inv) as f32;
                let shift = (bv[ch] as f64 - mean * wv[ch] as f64 * inv) as f32;
                let eff = move |d: f32, v: f32| if !relu || v * scale + shift > 0.0 { d } else { 0.0 };
                let (mut s_dy, mut s_dyx) = (0f64, 0f64);
                for o in planes() {
                    let (a, b) = sum_dy_dev(&dy[o..o + hw], &xv[o..o + hw], mean as f32, eff);
                    s_dy += a;
                    s_dyx += b * inv;
                }
                // dx = k·(m·dy′ − Σdy′ − x̂·Σdy′·x̂) = a·dy′ + b·(x − μ) + c
                let k = wv[ch] as f64 * inv / m;
                let (ca, cb, cc) = ((k * m) as f32, (-k * inv * s_dyx) as f32, (-k * s_dy) as f32);
                let mf = mean as f32;
                for o in planes() {
                    // SAFETY: each (image, channel) plane is written by exactly one task.
                    let dst = unsafe { std::slice::from_raw_parts_mut(dp.0.add(o), hw) };
                    for ((dd, &d), &v) in dst.iter_mut().zip(&dy[o..o + hw]).zip(&xv[o..o + hw]) {
                        *dd = ca * eff(d, v) + cb * (v - mf) + cc;
                    }
                }
                dw += s_dyx;
                db += s_dy;
            }
            (dw as f32, db as f32)
        })
        .collect();
    (dx, sums.iter().map(|s| s.0).collect(), sums.iter().map(|s| s.1).collect())
}

/// Train-mode BN, the residual added, then ReLU: `max(0, bn(x) + r)` as one node (the block's
/// join in a ResNet), arguments `(x, [w; b], r)`. The BN output is never a tensor of its own
/// (one pass and one activation-sized tensor fewer per block, which candle's graph would
/// otherwise keep until the backward ends); the backward masks by the saved output.
struct BnAddRelu {
    splits: usize,
    eps: f64,
    stats: Arc<Mutex<GroupStats>>,
}

impl CustomOp3 for BnAddRelu {
    fn name(&self) -> &'static str {
        "batch_norm_add_relu_train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, wb, r) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?, f32_slice(s3, l3)?);
        let d = dims(l1)?;
        if l1.shape() != l3.shape() || wb.len() != 2 * d.1 {
            candle_core::bail!(
                "batch_norm_add_relu_train: shapes {:?}, {:?}, {:?}",
                l1.shape(),
                l2.shape(),
                l3.shape()
            );
        }
        let (y, stats) = bn_fwd(x, &wb[..d.1], &wb[d.1..], Some(r), d, self.splits, self.eps, true)?;
        *self.stats.lock().unwrap() = stats;
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        wb: &Tensor,
        _r: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c, h, w) = x.dims4()?;
        let stats = self.stats.lock().unwrap().clone();
        let wbv = tensor_vec(wb)?;
        // dy′ = dy where the output was positive: also the residual's gradient.
        let masked = mask_by_output(grad, res)?;
        let (xs, xl) = x.storage_and_layout();
        let Storage::Cpu(xs) = &*xs else {
            candle_core::bail!("batch_norm_add_relu_train: CPU only")
        };
        let (dx, dw, db) = bn_bwd(
            f32_slice(xs, xl)?,
            &masked,
            &wbv[..c],
            &wbv[c..],
            &stats,
            (n, c, h * w),
            self.splits,
            self.eps,
            false,
        );
        let dev = Device::Cpu;
        let dwb = Tensor::from_vec([dw, db].concat(), 2 * c, &dev)?;
        Ok((
            Some(Tensor::from_vec(dx, (n, c, h, w), &dev)?),
            Some(dwb),
            Some(Tensor::from_vec(masked, (n, c, h, w), &dev)?),
        ))
    }
}

/// Fused train-mode `max(0, bn(x) + residual)` on CPU: returns `y` and the per-group statistics.
fn batch_norm_add_relu_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    residual: &Tensor,
    splits: usize,
    eps: f64,
) -> Result<(Tensor, GroupStats)> {
    let stats = Arc::new(Mutex::new(GroupStats::default()));
    let op = BnAddRelu {
        splits,
        eps,
        stats: stats.clone(),
    };
    let wb = Tensor::cat(&[weight.contiguous()?, bias.contiguous()?], 0)?;
    let y = x.contiguous()?.apply_op3(&wb, &residual.contiguous()?, op)?;
    let s = stats.lock().unwrap().clone();
    Ok((y, s))
}

/// Fused train-mode BN, CPU only (the layers call [`forward_train`]; `moco bench step` times
/// this node alone): returns `y` and the per-group statistics.
///
/// # Shapes
/// `x (N, C, H, W)` with `N % splits == 0`, `weight`, `bias` `(C)` → `(N, C, H, W)`
pub fn batch_norm_train(x: &Tensor, weight: &Tensor, bias: &Tensor, splits: usize, eps: f64) -> Result<(Tensor, GroupStats)> {
    bn_train_op(x, weight, bias, splits, eps, false)
}

/// [`batch_norm_train`] followed by a ReLU, in the same passes: `max(0, bn(x))`.
fn batch_norm_relu_train(x: &Tensor, weight: &Tensor, bias: &Tensor, splits: usize, eps: f64) -> Result<(Tensor, GroupStats)> {
    bn_train_op(x, weight, bias, splits, eps, true)
}

fn bn_train_op(x: &Tensor, weight: &Tensor, bias: &Tensor, splits: usize, eps: f64, relu: bool) -> Result<(Tensor, GroupStats)> {
    let stats = Arc::new(Mutex::new(GroupStats::default()));
    let op = BnTrain {
        splits,
        eps,
        relu,
        stats: stats.clone(),
    };
    let y = x.contiguous()?.apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)?;
    let s = stats.lock().unwrap().clone();
    Ok((y, s))
}

/// The CPU passes on plain slices, for `examples/bn_probe.rs`.
#[doc(hidden)]
pub mod parts {
    use super::*;
    /// Forward of `x (N, C, H·W)` (`d` = `(N, C, H·W)`, `g` groups, residual `r` added before
    /// the ReLU when given): `y` and the group statistics.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        x: &[f32],
        w: &[f32],
        b: &[f32],
        r: Option<&[f32]>,
        d: (usize, usize, usize),
        g: usize,
        relu: bool,
    ) -> (Vec<f32>, GroupStats) {
        bn_fwd(x, w, b, r, d, g, BN_EPS, relu).expect("valid shapes")
    }
    /// Backward from the forward's statistics `s`: `dx (N, C, H·W)`, `dw (C)`, `db (C)`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        x: &[f32],
        dy: &[f32],
        w: &[f32],
        b: &[f32],
        s: &GroupStats,
        d: (usize, usize, usize),
        g: usize,
        relu: bool,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        bn_bwd(x, dy, w, b, s, d, g, BN_EPS, relu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use rand::{Rng, SeedableRng};

    fn rand_var(shape: &[usize], lo: f32, hi: f32, rng: &mut rand_chacha::ChaCha8Rng) -> Var {
        let n: usize = shape.iter().product();
        Var::from_tensor(&Tensor::from_vec((0..n).map(|_| rng.random_range(lo..hi)).collect::<Vec<_>>(), shape, &Device::Cpu).unwrap())
            .unwrap()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        crate::devcheck::max_abs_diff(&a, &b)
    }

    /// The fused CPU kernel against the composed candle ops: output, statistics and the three
    /// gradients, for whole-batch and split statistics and odd spatial sizes.
    #[test]
    fn fused_batch_norm_matches_composed() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for &(n, c, h, w, g) in &[(4, 3, 5, 7, 1), (6, 4, 3, 3, 3), (8, 2, 1, 1, 2), (4, 5, 4, 4, 2)] {
            let x = rand_var(&[n, c, h, w], -2.0, 3.0, &mut rng);
            let wt = rand_var(&[c], 0.5, 1.5, &mut rng);
            let b = rand_var(&[c], -0.5, 0.5, &mut rng);
            let probe = rand_var(&[n, c, h, w], -1.0, 1.0, &mut rng);
            let (y1, st) = batch_norm_train(x.as_tensor(), wt.as_tensor(), b.as_tensor(), g, BN_EPS).unwrap();
            let (y2, mean, var) = composed_train(x.as_tensor(), wt.as_tensor(), b.as_tensor(), g, BN_EPS).unwrap();
            assert!(max_abs_diff(&y1, &y2) < 1e-4);
            assert!(max_abs_diff(&Tensor::from_vec(st.mean, (g, c), &Device::Cpu).unwrap(), &mean) < 1e-5);
            assert!(max_abs_diff(&Tensor::from_vec(st.var, (g, c), &Device::Cpu).unwrap(), &var) < 1e-4);
            let g1 = (y1 * probe.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (y2 * probe.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
            for v in [&x, &wt, &b] {
                let d = max_abs_diff(g1.get(v.as_tensor()).unwrap(), g2.get(v.as_tensor()).unwrap());
                assert!(d < 1e-4, "gradient mismatch {d} for {:?} (n{n} c{c} g{g})", v.dims());
            }
        }
    }

    /// The fused BN + residual + ReLU node against composed candle ops: output and the four
    /// gradients (input, weight, bias, residual), whole-batch and split statistics.
    #[test]
    fn fused_batch_norm_add_relu_matches_composed() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
        for &(n, c, h, w, g) in &[(4, 3, 5, 7, 1), (6, 4, 3, 3, 3), (8, 2, 1, 1, 2)] {
            let x = rand_var(&[n, c, h, w], -2.0, 3.0, &mut rng);
            let wt = rand_var(&[c], 0.5, 1.5, &mut rng);
            let b = rand_var(&[c], -0.5, 0.5, &mut rng);
            let r = rand_var(&[n, c, h, w], -1.0, 1.0, &mut rng);
            let probe = rand_var(&[n, c, h, w], -1.0, 1.0, &mut rng);
            let (y1, st) = batch_norm_add_relu_train(x.as_tensor(), wt.as_tensor(), b.as_tensor(), r.as_tensor(), g, BN_EPS).unwrap();
            let (bn, mean, _) = composed_train(x.as_tensor(), wt.as_tensor(), b.as_tensor(), g, BN_EPS).unwrap();
            let y2 = (bn + r.as_tensor()).unwrap().relu().unwrap();
            assert!(max_abs_diff(&y1, &y2) < 1e-4);
            assert!(max_abs_diff(&Tensor::from_vec(st.mean, (g, c), &Device::Cpu).unwrap(), &mean) < 1e-5);
            // Some outputs are clipped, some not: the mask is exercised.
            let pos = y1
                .gt(0.0)
                .unwrap()
                .to_dtype(candle_core::DType::F32)
                .unwrap()
                .mean_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(pos > 0.1 && pos < 0.9, "fraction positive {pos}");
            let g1 = (y1 * probe.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (y2 * probe.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
            for v in [&x, &wt, &b, &r] {
                let d = max_abs_diff(g1.get(v.as_tensor()).unwrap(), g2.get(v.as_tensor()).unwrap());
                assert!(d < 1e-4, "gradient mismatch {d} for {:?} (n{n} c{c} g{g})", v.dims());
            }
        }
    }

    /// Finite differences on the fused kernel's input gradient (f32, central, loose tolerance).
    #[test]
    fn fused_batch_norm_finite_differences() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
        let (n, c, h, w) = (4, 2, 3, 2);
        let x = rand_var(&[n, c, h, w], -1.0, 1.0, &mut rng);
        let wt = rand_var(&[c], 0.5, 1.5, &mut rng);
        let b = rand_var(&[c], -0.5, 0.5, &mut rng);
        let probe = rand_var(&[n, c, h, w], -1.0, 1.0, &mut rng);
        let f = |xt: &Tensor| -> f64 {
            let (y, _) = batch_norm_train(xt, wt.as_tensor(), b.as_tensor(), 2, BN_EPS).unwrap();
            (y * probe.as_tensor()).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64
        };
        let (y, _) = batch_norm_train(x.as_tensor(), wt.as_tensor(), b.as_tensor(), 2, BN_EPS).unwrap();
        let grads = (y * probe.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
        let gx = grads.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let base = x.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let eps = 1e-2f32;
        for i in [0usize, 5, 11, 17, 23, 40] {
            let mut p = base.clone();
            p[i] += eps;
            let mut m = base.clone();
            m[i] -= eps;
            let tp = Tensor::from_vec(p, (n, c, h, w), &Device::Cpu).unwrap();
            let tm = Tensor::from_vec(m, (n, c, h, w), &Device::Cpu).unwrap();
            let fd = (f(&tp) - f(&tm)) / (2.0 * eps as f64);
            assert!((fd - gx[i] as f64).abs() < 2e-2, "index {i}: fd {fd} vs {}", gx[i]);
        }
    }
}
