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
    pub fn new(store: &ParamStore, name: &str, cin: usize, cout: usize, k: usize, stride: usize, padding: usize, seed: u64) -> Result<Self> {
        let std = (2.0 / (cout * k * k) as f32).sqrt();
        let weight = store.get_or_init(&format!("{name}.weight"), (cout, cin, k, k), Kind::Trainable, Init::Normal(std), seed)?;
        Ok(Self { weight, stride, padding })
    }

    /// `(N, Cin, H, W)` → `(N, Cout, H', W')`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.conv2d(self.weight.as_tensor(), self.padding, self.stride, 1, 1)
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
        let (n, c, h, w) = x.dims4()?;
        let wt = self.weight.as_tensor();
        let bs = self.bias.as_tensor();
        match mode {
            BnMode::Eval => {
                let inv = (self.running_var.as_tensor() + BN_EPS)?.sqrt()?.recip()?;
                let scale = (wt * inv)?; // (C)
                let shift = (bs - (self.running_mean.as_tensor() * &scale)?)?;
                x.broadcast_mul(&scale.reshape((1, c, 1, 1))?)?.broadcast_add(&shift.reshape((1, c, 1, 1))?)
            }
            BnMode::Train { splits } => {
                let g = splits;
                let xg = x.reshape((g, n / g, c, h * w))?;
                let mean = xg.mean_keepdim(3)?.mean_keepdim(1)?; // (G, 1, C, 1)
                let xc = xg.broadcast_sub(&mean)?;
                let var = xc.sqr()?.mean_keepdim(3)?.mean_keepdim(1)?; // biased, (G, 1, C, 1)
                let inv = (var.clone() + BN_EPS)?.sqrt()?.recip()?;
                let y = xc
                    .broadcast_mul(&inv)?
                    .broadcast_mul(&wt.reshape((1, 1, c, 1))?)?
                    .broadcast_add(&bs.reshape((1, 1, c, 1))?)?;
                // Running statistics (no gradient).
                let m = ((n / g) * h * w) as f64;
                let gm = mean.detach().reshape((g, c))?.mean(0)?;
                let gv = (var.detach().reshape((g, c))?.mean(0)? * (m / (m - 1.0).max(1.0)))?;
                let rm = ((self.running_mean.as_tensor() * (1.0 - BN_MOMENTUM))? + (gm * BN_MOMENTUM)?)?;
                let rv = ((self.running_var.as_tensor() * (1.0 - BN_MOMENTUM))? + (gv * BN_MOMENTUM)?)?;
                self.running_mean.set(&rm)?;
                self.running_var.set(&rv)?;
                self.num_batches_tracked.set(&(self.num_batches_tracked.as_tensor() + 1.0)?)?;
                y.reshape((n, c, h, w))
            }
        }
    }
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
