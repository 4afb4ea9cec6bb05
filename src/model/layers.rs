//! Conv2d, BatchNorm2d and Linear with torchvision's names, shapes and default init, built
//! from a [`ParamStore`]. BatchNorm supports train mode with statistics per group of images
//! (SplitBatchNorm of the MoCo CIFAR demo; emulates per-GPU BN on one device). The ops
//! underneath are [`crate::kernels`]' (each picks its device path itself); [`conv2d`],
//! [`add_relu`] and [`BN_EPS`] are re-exported from there.

use super::params::{Init, Kind, ParamStore};
use crate::kernels::batch_norm::{self as bn, Epilogue};
use candle_core::{Result, Tensor, Var, D};

pub use crate::kernels::add_relu;
pub use crate::kernels::batch_norm::BN_EPS;
pub use crate::kernels::conv::conv2d;

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

    /// `max(0, bn(x) + residual)`, a residual block's join: in train mode one op
    /// ([`bn::forward_train`] with [`Epilogue::AddRelu`]: one fused node on CPU), in eval mode
    /// BN then [`add_relu`].
    pub fn forward_add_relu(&self, x: &Tensor, residual: &Tensor, mode: BnMode) -> Result<Tensor> {
        match mode {
            BnMode::Train { splits } => {
                let (n, _, h, w) = x.dims4()?;
                let (wt, bs) = (self.weight.as_tensor(), self.bias.as_tensor());
                let (y, mean, var) = bn::forward_train(x, wt, bs, splits, BN_EPS, Epilogue::AddRelu(residual))?;
                self.update_running(&mean, &var, ((n / splits) * h * w) as f64)?;
                Ok(y)
            }
            BnMode::Eval => add_relu(&self.forward(x, mode)?, residual),
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

/// Train-mode BN as the layers run it ([`bn::forward_train`]: the fused kernel on CPU,
/// candle's ops elsewhere), with an optional ReLU after it: `y`, group means and biased group
/// variances `(G, C)`.
pub fn batch_norm_train(x: &Tensor, weight: &Tensor, bias: &Tensor, g: usize, relu: bool) -> Result<(Tensor, Tensor, Tensor)> {
    bn::forward_train(x, weight, bias, g, BN_EPS, if relu { Epilogue::Relu } else { Epilogue::None })
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
/// −∞ padding): output `ceil(H/2) × ceil(W/2)`, as torchvision's stem.
///
/// Built from differentiable ops (the 3×3 stride-1 maximum as two separable passes of
/// `maximum` over shifted views, then every other row and column) because candle has no
/// backward for `max_pool2d` when the kernel differs from the stride. The gradient goes to the
/// window's maximum; an exact tie splits it (candle's `maximum`), where PyTorch gives it all to
/// the first — after a ReLU the ties are zeros, whose gradient the ReLU drops anyway.
pub fn max_pool_3x3_s2(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let p = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
    let rows = p.narrow(2, 0, h)?.maximum(&p.narrow(2, 1, h)?)?.maximum(&p.narrow(2, 2, h)?)?;
    let m = rows
        .narrow(3, 0, w)?
        .maximum(&rows.narrow(3, 1, w)?)?
        .maximum(&rows.narrow(3, 2, w)?)?;
    every_other(&m)
}

/// Rows and columns 0, 2, 4, … of `(N, C, H, W)`: `(N, C, ceil(H/2), ceil(W/2))`.
fn every_other(m: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = m.dims4()?;
    let m = m.pad_with_zeros(2, 0, h % 2)?.pad_with_zeros(3, 0, w % 2)?;
    let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
    m.reshape((n, c, h2, 2, w2, 2))?
        .narrow(3, 0, 1)?
        .narrow(5, 0, 1)?
        .reshape((n, c, h2, w2))
}

#[cfg(test)]
mod tests {
    use super::max_pool_3x3_s2;
    use candle_core::{Device, Tensor, Var};

    /// Random non-negative `(1, 2, h, w)` values without ties.
    fn input(h: usize, w: usize) -> Vec<f32> {
        let n = 2 * h * w;
        (0..n).map(|i| ((i * 7919 + 13) % 1009) as f32 / 1009.0 + i as f32 * 1e-6).collect()
    }

    #[test]
    fn max_pool_equals_candles_forward_and_routes_the_gradient_to_each_window_max() {
        for (h, w) in [(8, 6), (5, 7), (1, 1), (4, 3)] {
            let v = input(h, w);
            let x = Var::from_tensor(&Tensor::from_vec(v.clone(), (1, 2, h, w), &Device::Cpu).unwrap()).unwrap();
            let y = max_pool_3x3_s2(x.as_tensor()).unwrap();
            let reference = x
                .pad_with_zeros(2, 1, 1)
                .unwrap()
                .pad_with_zeros(3, 1, 1)
                .unwrap()
                .max_pool2d_with_stride(3, 2)
                .unwrap();
            assert_eq!(y.dims(), reference.dims(), "{h}x{w}");
            assert_eq!(
                y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                reference.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            );
            let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
            let r: Vec<f32> = (0..2 * h2 * w2).map(|i| 1.0 + i as f32).collect();
            let loss = (y * Tensor::from_vec(r.clone(), (1, 2, h2, w2), &Device::Cpu).unwrap())
                .unwrap()
                .sum_all()
                .unwrap();
            let g = loss
                .backward()
                .unwrap()
                .get(x.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let mut expected = vec![0f32; 2 * h * w];
            for c in 0..2 {
                for (oy, ox) in (0..h2).flat_map(|oy| (0..w2).map(move |ox| (oy, ox))) {
                    let window = (0..3).flat_map(|dy| (0..3).map(move |dx| (dy, dx)));
                    let inside = window
                        .map(|(dy, dx)| (2 * oy + dy, 2 * ox + dx))
                        .filter(|&(y, x)| (1..=h).contains(&y) && (1..=w).contains(&x))
                        .map(|(y, x)| c * h * w + (y - 1) * w + (x - 1));
                    let arg = inside.max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap();
                    expected[arg] += r[c * h2 * w2 + oy * w2 + ox];
                }
            }
            assert_eq!(g, expected, "{h}x{w}");
        }
    }
}
