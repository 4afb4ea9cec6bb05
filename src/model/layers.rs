//! Conv2d, BatchNorm2d and Linear with torchvision's names, shapes and default init, built
//! from a [`ParamStore`]. BatchNorm supports train mode with statistics per group of images
//! (SplitBatchNorm of the MoCo CIFAR demo; emulates per-GPU BN on one device).

use super::params::{Init, Kind, ParamStore};
use candle_core::{Result, Tensor, Var, D};

/// How BatchNorm behaves in a forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BnMode {
    /// Batch statistics per group of `batch/splits` images; running stats updated.
    Train {
        /// Number of groups (1 = whole batch).
        splits: usize,
    },
    /// Running statistics; nothing updated.
    Eval,
}

/// 2-D convolution without bias (every ResNet conv is followed by BN).
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Var,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    /// `name.weight` of shape (out, in, k, k); kaiming_normal_(mode='fan_out', relu).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: &ParamStore,
        name: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        padding: usize,
        seed: u64,
    ) -> Result<Self> {
        let std = (2.0 / (cout * k * k) as f32).sqrt();
        let weight = store.get_or_init(
            &format!("{name}.weight"),
            (cout, cin, k, k),
            Kind::Trainable,
            Init::Normal(std),
            seed,
        )?;
        Ok(Self { weight, stride, padding })
    }

    /// `(cout, cin, k, stride, padding)`.
    pub fn geometry(&self) -> (usize, usize, usize, usize, usize) {
        let d = self.weight.as_tensor().dims();
        (d[0], d[1], d[2], self.stride, self.padding)
    }

    /// `(N, Cin, H, W)` → `(N, Cout, H', W')`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv2d(x, self.weight.as_tensor(), self.stride, self.padding)
    }
}

/// Convolution without bias as the layers run it: the CPU kernel on CPU, candle's op elsewhere.
pub fn conv2d(x: &Tensor, weight: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    if crate::kernels::use_cpu_kernels(x.device()) {
        crate::kernels::conv::conv2d(x, weight, stride, padding)
    } else {
        x.conv2d(weight, padding, stride, 1, 1)
    }
}

/// BatchNorm2d (eps 1e-5, momentum 0.1, unbiased running variance), torchvision names
/// `weight`, `bias`, `running_mean`, `running_var`, `num_batches_tracked`.
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    weight: Var,
    bias: Var,
    running_mean: Var,
    running_var: Var,
    num_batches_tracked: Var,
}

/// PyTorch's BatchNorm defaults.
pub const BN_EPS: f64 = 1e-5;
/// Running-statistics momentum (PyTorch convention: new = (1−μ)·old + μ·batch).
pub const BN_MOMENTUM: f64 = 0.1;

impl BatchNorm2d {
    /// Create or fetch the five tensors of `name`.
    pub fn new(store: &ParamStore, name: &str, c: usize, seed: u64) -> Result<Self> {
        let g = |s: &str, kind, v| store.get_or_init(&format!("{name}.{s}"), c, kind, Init::Const(v), seed);
        Ok(Self {
            weight: g("weight", Kind::Trainable, 1.0)?,
            bias: g("bias", Kind::Trainable, 0.0)?,
            running_mean: g("running_mean", Kind::Buffer, 0.0)?,
            running_var: g("running_var", Kind::Buffer, 1.0)?,
            num_batches_tracked: store.get_or_init(&format!("{name}.num_batches_tracked"), (), Kind::Buffer, Init::Const(0.0), seed)?,
        })
    }

    /// `(N, C, H, W)` → same shape.
    ///
    /// Train mode: mean and biased variance per channel over each group of `N/splits` images;
    /// the running stats move towards the average over groups of the group mean and unbiased
    /// group variance (for `splits = 1` exactly `torch.nn.BatchNorm2d`).
    pub fn forward(&self, x: &Tensor, mode: BnMode) -> Result<Tensor> {
        self.forward_maybe_relu(x, mode, false)
    }

    /// `max(0, bn(x))`: on CPU in train mode one fused node (the BN pass writes the ReLU).
    pub fn forward_relu(&self, x: &Tensor, mode: BnMode) -> Result<Tensor> {
        self.forward_maybe_relu(x, mode, true)
    }

    /// `max(0, bn(x) + residual)`, a residual block's join: on CPU in train mode one fused node
    /// ([`crate::kernels::batch_norm::batch_norm_add_relu_train`]), elsewhere BN, add, ReLU.
    pub fn forward_add_relu(&self, x: &Tensor, residual: &Tensor, mode: BnMode) -> Result<Tensor> {
        match mode {
            BnMode::Train { splits } if crate::kernels::use_cpu_kernels(x.device()) => {
                let (n, c, h, w) = x.dims4()?;
                let (y, st) = crate::kernels::batch_norm::batch_norm_add_relu_train(
                    x,
                    self.weight.as_tensor(),
                    self.bias.as_tensor(),
                    residual,
                    splits,
                    BN_EPS,
                )?;
                let (mean, var) = group_stats(st, c, x.device())?;
                self.update_running(&mean, &var, ((n / splits) * h * w) as f64)?;
                Ok(y)
            }
            _ => add_relu(&self.forward(x, mode)?, residual),
        }
    }

    /// Running statistics (no gradient) from the group means and biased variances `(G, C)` of
    /// `m` values each: the average over groups, the variance unbiased.
    fn update_running(&self, mean: &Tensor, var: &Tensor, m: f64) -> Result<()> {
        let gm = mean.detach().mean(0)?;
        let gv = (var.detach().mean(0)? * (m / (m - 1.0).max(1.0)))?;
        let rm = ((self.running_mean.as_tensor() * (1.0 - BN_MOMENTUM))? + (gm * BN_MOMENTUM)?)?;
        let rv = ((self.running_var.as_tensor() * (1.0 - BN_MOMENTUM))? + (gv * BN_MOMENTUM)?)?;
        self.running_mean.set(&rm)?;
        self.running_var.set(&rv)?;
        self.num_batches_tracked.set(&(self.num_batches_tracked.as_tensor() + 1.0)?)
    }

    fn forward_maybe_relu(&self, x: &Tensor, mode: BnMode, relu: bool) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let wt = self.weight.as_tensor();
        let bs = self.bias.as_tensor();
        match mode {
            BnMode::Eval => {
                let inv = (self.running_var.as_tensor() + BN_EPS)?.sqrt()?.recip()?;
                let scale = (wt * inv)?; // (C)
                let shift = (bs - (self.running_mean.as_tensor() * &scale)?)?;
                let y = x
                    .broadcast_mul(&scale.reshape((1, c, 1, 1))?)?
                    .broadcast_add(&shift.reshape((1, c, 1, 1))?)?;
                if relu {
                    y.relu()
                } else {
                    Ok(y)
                }
            }
            BnMode::Train { splits } => {
                let g = splits;
                let (y, mean, var) = batch_norm_train(x, wt, bs, g, relu)?;
                self.update_running(&mean, &var, ((n / g) * h * w) as f64)?;
                Ok(y)
            }
        }
    }
}

/// Train-mode BN as the layers run it (the fused kernel on CPU, candle's ops elsewhere), with
/// an optional ReLU after it: `y`, group means and biased group variances `(G, C)`.
pub fn batch_norm_train(x: &Tensor, weight: &Tensor, bias: &Tensor, g: usize, relu: bool) -> Result<(Tensor, Tensor, Tensor)> {
    use crate::kernels::batch_norm as k;
    if crate::kernels::use_cpu_kernels(x.device()) {
        let c = x.dim(1)?;
        let f = if relu { k::batch_norm_relu_train } else { k::batch_norm_train };
        let (y, st) = f(x, weight, bias, g, BN_EPS)?;
        let (mean, var) = group_stats(st, c, x.device())?;
        Ok((y, mean, var))
    } else {
        let (y, mean, var) = batch_norm_composed(x, weight, bias, g)?;
        Ok((if relu { y.relu()? } else { y }, mean, var))
    }
}

/// The fused kernels' group statistics as `(G, C)` tensors (means, biased variances).
fn group_stats(st: crate::kernels::batch_norm::GroupStats, c: usize, dev: &candle_core::Device) -> Result<(Tensor, Tensor)> {
    let g = st.mean.len() / c.max(1);
    Ok((Tensor::from_vec(st.mean, (g, c), dev)?, Tensor::from_vec(st.var, (g, c), dev)?))
}

/// `max(0, a + b)` (the residual join): on CPU one node whose backward masks the gradient once
/// for both inputs; elsewhere candle's add and relu.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if crate::kernels::use_cpu_kernels(a.device()) {
        crate::kernels::add_relu(a, b)
    } else {
        (a + b)?.relu()
    }
}

/// Train-mode BN from candle ops (any device): returns `y`, group means and biased group
/// variances `(G, C)`. The CPU path uses the fused kernel instead; tests compare the two.
pub fn batch_norm_composed(x: &Tensor, weight: &Tensor, bias: &Tensor, g: usize) -> Result<(Tensor, Tensor, Tensor)> {
    let (n, c, h, w) = x.dims4()?;
    let xg = x.reshape((g, n / g, c, h * w))?;
    let mean = xg.mean_keepdim(3)?.mean_keepdim(1)?; // (G, 1, C, 1)
    let xc = xg.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(3)?.mean_keepdim(1)?; // biased, (G, 1, C, 1)
    let inv = (var.clone() + BN_EPS)?.sqrt()?.recip()?;
    let y = xc
        .broadcast_mul(&inv)?
        .broadcast_mul(&weight.reshape((1, 1, c, 1))?)?
        .broadcast_add(&bias.reshape((1, 1, c, 1))?)?
        .reshape((n, c, h, w))?;
    Ok((y, mean.reshape((g, c))?, var.reshape((g, c))?))
}

/// Linear layer `y = x Wᵀ + b`; PyTorch default init U(±1/√in) for both.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Var,
    bias: Var,
}

impl Linear {
    /// `name.weight` (out, in) and `name.bias` (out).
    pub fn new(store: &ParamStore, name: &str, cin: usize, cout: usize, seed: u64) -> Result<Self> {
        let b = 1.0 / (cin as f32).sqrt();
        Ok(Self {
            weight: store.get_or_init(&format!("{name}.weight"), (cout, cin), Kind::Trainable, Init::Uniform(b), seed)?,
            bias: store.get_or_init(&format!("{name}.bias"), cout, Kind::Trainable, Init::Uniform(b), seed)?,
        })
    }

    /// `(N, in)` → `(N, out)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.weight.as_tensor().t()?)?.broadcast_add(self.bias.as_tensor())
    }
}

/// Global average pool `(N, C, H, W)` → `(N, C)`.
pub fn avg_pool(x: &Tensor) -> Result<Tensor> {
    x.flatten_from(2)?.mean(D::Minus1)
}

/// 3×3 max-pool, stride 2, padding 1 on a non-negative input (after ReLU, zero padding equals
/// −∞ padding).
pub fn max_pool_3x3_s2(x: &Tensor) -> Result<Tensor> {
    x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?.max_pool2d_with_stride(3, 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
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
            let (y1, st) = crate::kernels::batch_norm::batch_norm_train(x.as_tensor(), wt.as_tensor(), b.as_tensor(), g, BN_EPS).unwrap();
            let (y2, mean, var) = batch_norm_composed(x.as_tensor(), wt.as_tensor(), b.as_tensor(), g).unwrap();
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
            let (y1, st) = crate::kernels::batch_norm::batch_norm_add_relu_train(
                x.as_tensor(),
                wt.as_tensor(),
                b.as_tensor(),
                r.as_tensor(),
                g,
                BN_EPS,
            )
            .unwrap();
            let (bn, mean, _) = batch_norm_composed(x.as_tensor(), wt.as_tensor(), b.as_tensor(), g).unwrap();
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
            let (y, _) = crate::kernels::batch_norm::batch_norm_train(xt, wt.as_tensor(), b.as_tensor(), 2, BN_EPS).unwrap();
            (y * probe.as_tensor()).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64
        };
        let (y, _) = crate::kernels::batch_norm::batch_norm_train(x.as_tensor(), wt.as_tensor(), b.as_tensor(), 2, BN_EPS).unwrap();
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
