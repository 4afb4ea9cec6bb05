//! The normalisation of frozen features before the linear classifier
//! (`eval.linear.feature_norm`): none, or MAE's and MoCo v3's
//! `BatchNorm1d(D, affine=False, eps=1e-6)`.

use crate::config::FeatureNorm;
use candle_core::{DType, Device, Result, Tensor};

/// Epsilon of the lincls BatchNorm (`eps=1e-6`, not PyTorch's default 1e-5).
pub const FEATURE_BN_EPS: f64 = 1e-6;

/// Momentum of its running statistics (PyTorch: new = (1 − μ)·old + μ·batch).
pub const FEATURE_BN_MOMENTUM: f64 = 0.1;

/// The normalisation in front of the classifier, with its running statistics.
#[derive(Debug, Clone)]
pub struct FeatureNormalizer {
    /// Which normalisation.
    kind: FeatureNorm,
    /// Running mean `(D,)` (starts at 0).
    running_mean: Tensor,
    /// Running unbiased variance `(D,)` (starts at 1).
    running_var: Tensor,
}

impl FeatureNormalizer {
    /// `kind` over features of width `dim`, running statistics as PyTorch initialises them.
    pub fn new(kind: FeatureNorm, dim: usize, device: &Device) -> Result<Self> {
        Ok(Self {
            kind,
            running_mean: Tensor::zeros(dim, DType::F32, device)?,
            running_var: Tensor::ones(dim, DType::F32, device)?,
        })
    }

    /// Training mode, `(n, D)` → `(n, D)`: each feature normalised by the batch's mean and
    /// biased variance; the running mean and unbiased variance move towards the batch's. A
    /// batch of one image (PyTorch refuses it) normalises to 0 and moves the running variance
    /// towards 0.
    pub fn train(&mut self, x: &Tensor) -> Result<Tensor> {
        if self.kind == FeatureNorm::None {
            return Ok(x.clone());
        }
        let n = x.dim(0)? as f64;
        let mean = x.mean_keepdim(0)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(0)?;
        let unbiased = (&var * (n / (n - 1.0).max(1.0)))?.squeeze(0)?;
        let m = FEATURE_BN_MOMENTUM;
        self.running_mean = ((&self.running_mean * (1.0 - m))? + (mean.squeeze(0)? * m)?)?;
        self.running_var = ((&self.running_var * (1.0 - m))? + (unbiased * m)?)?;
        centred.broadcast_div(&(var + FEATURE_BN_EPS)?.sqrt()?)
    }

    /// Evaluation mode, `(n, D)` → `(n, D)`: the running statistics.
    pub fn eval(&self, x: &Tensor) -> Result<Tensor> {
        if self.kind == FeatureNorm::None {
            return Ok(x.clone());
        }
        let std = (&self.running_var + FEATURE_BN_EPS)?.sqrt()?;
        x.broadcast_sub(&self.running_mean)?.broadcast_div(&std)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &Tensor, b: &[[f32; 2]]) {
        let a = a.to_vec2::<f32>().unwrap();
        for (ra, rb) in a.iter().zip(b) {
            for (x, y) in ra.iter().zip(rb) {
                assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
            }
        }
    }

    /// The values `torch.nn.BatchNorm1d(2, affine=False, eps=1e-6)` gives: train mode on
    /// [[1, 2], [3, 6]] (mean [2, 4], biased var [1, 4], unbiased [2, 8]), then eval mode.
    #[test]
    fn batch_norm_follows_pytorch_batchnorm1d_without_affine() {
        let d = Device::Cpu;
        let mut bn = FeatureNormalizer::new(FeatureNorm::BatchNorm, 2, &d).unwrap();
        let x = Tensor::new(&[[1f32, 2.], [3., 6.]], &d).unwrap();
        let e = FEATURE_BN_EPS as f32;
        let (s1, s4) = ((1. + e).sqrt(), (4. + e).sqrt());
        close(&bn.train(&x).unwrap(), &[[-1. / s1, -2. / s4], [1. / s1, 2. / s4]]);
        // running_mean = 0.1·[2, 4]; running_var = 0.9·1 + 0.1·[2, 8] = [1.1, 1.7].
        let (v0, v1) = ((1.1 + e).sqrt(), (1.7 + e).sqrt());
        let y = Tensor::new(&[[0.2f32, 0.4], [1.2, 2.1]], &d).unwrap();
        close(&bn.eval(&y).unwrap(), &[[0., 0.], [1. / v0, 1.7 / v1]]);
        // A second step: running = 0.9·old + 0.1·batch.
        bn.train(&x).unwrap();
        close(&bn.eval(&Tensor::new(&[[0.38f32, 0.76]], &d).unwrap()).unwrap(), &[[0., 0.]]);
        // Eval mode leaves the statistics alone.
        close(&bn.eval(&Tensor::new(&[[0.38f32, 0.76]], &d).unwrap()).unwrap(), &[[0., 0.]]);
    }

    #[test]
    fn none_passes_features_through() {
        let d = Device::Cpu;
        let mut n = FeatureNormalizer::new(FeatureNorm::None, 2, &d).unwrap();
        let x = Tensor::new(&[[1f32, 2.], [3., 6.]], &d).unwrap();
        close(&n.train(&x).unwrap(), &[[1., 2.], [3., 6.]]);
        close(&n.eval(&x).unwrap(), &[[1., 2.], [3., 6.]]);
    }
}
