//! SGD with momentum and weight decay, PyTorch semantics (`torch.optim.SGD`, dampening 0,
//! no Nesterov): `g ← g + wd·θ; buf ← μ·buf + g` (buf = g on the first step); `θ ← θ − lr·buf`.
//! Parameters without a gradient are left untouched. Buffers are detached so no step's graph
//! outlives it (a known trap: shared/notes/candle-cpu.md).

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use std::collections::BTreeMap;

/// The optimizer and its momentum buffers, keyed by parameter name.
#[derive(Debug, Clone)]
pub struct Sgd {
    /// μ.
    pub momentum: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// Momentum buffers (saved in checkpoints as `optimizer.momentum_buffer.<name>`).
    pub buffers: BTreeMap<String, Tensor>,
}

impl Sgd {
    /// New optimizer with empty buffers.
    pub fn new(momentum: f64, weight_decay: f64) -> Self {
        Self {
            momentum,
            weight_decay,
            buffers: BTreeMap::new(),
        }
    }

    /// One update of every `(name, var)` that has a gradient in `grads`.
    pub fn step(&mut self, params: &[(String, Var)], grads: &GradStore, lr: f64) -> Result<()> {
        for (name, var) in params {
            let Some(g) = grads.get(var.as_tensor()) else { continue };
            let theta = var.as_tensor().detach();
            let mut g = g.detach();
            if self.weight_decay != 0.0 {
                g = (g + (&theta * self.weight_decay)?)?;
            }
            let buf = if self.momentum != 0.0 {
                let b = match self.buffers.get(name) {
                    Some(b) => ((b * self.momentum)? + g)?,
                    None => g,
                };
                self.buffers.insert(name.clone(), b.clone());
                b
            } else {
                g
            };
            var.set(&(theta - (buf * lr)?)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Reference from PyTorch 2:
    /// ```python
    /// w = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    /// opt = torch.optim.SGD([w], lr=0.1, momentum=0.9, weight_decay=0.01)
    /// for _ in range(3):
    ///     opt.zero_grad(); (w ** 2).sum().backward(); opt.step()
    /// print(w.tolist())  # [0.05819422006607056, -0.11638844013214111, 0.1745826005935669]
    /// ```
    #[test]
    fn matches_pytorch_three_steps() {
        let w = Var::new(&[1f32, -2., 3.], &Device::Cpu).unwrap();
        let params = vec![("w".to_string(), w.clone())];
        let mut opt = Sgd::new(0.9, 0.01);
        for _ in 0..3 {
            let loss = w.as_tensor().sqr().unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            opt.step(&params, &grads, 0.1).unwrap();
        }
        let got = w.as_tensor().to_vec1::<f32>().unwrap();
        // Closed form: g = (2 + wd)·w = 2.01·w each step; buf₁ = g₁, buf₂ = 0.9·buf₁ + g₂ …
        let mut x = [1f64, -2., 3.];
        let mut buf = [0f64; 3];
        for s in 0..3 {
            for i in 0..3 {
                let g = 2.0 * x[i] + 0.01 * x[i];
                buf[i] = if s == 0 { g } else { 0.9 * buf[i] + g };
                x[i] -= 0.1 * buf[i];
            }
        }
        for i in 0..3 {
            assert!((got[i] as f64 - x[i]).abs() < 1e-5, "{got:?} vs {x:?}");
        }
        let torch = [0.058_194_22f32, -0.116_388_44, 0.174_582_6];
        for i in 0..3 {
            assert!((got[i] - torch[i]).abs() < 1e-6, "{got:?} vs PyTorch {torch:?}");
        }
    }
}
