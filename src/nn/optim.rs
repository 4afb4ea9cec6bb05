//! SGD with momentum and weight decay, PyTorch semantics (`torch.optim.SGD`, dampening 0,
//! no Nesterov): `g ← g + wd·θ; buf ← μ·buf + g` (buf = g on the first step); `θ ← θ − lr·buf`.
//! Parameters without a gradient are left untouched. Buffers are detached so no step's graph
//! outlives it (a known trap: shared/notes/candle-cpu.md).

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use std::collections::BTreeMap;

/// The optimizer and its momentum buffers, keyed by parameter name. Not `Clone`: from the
/// second step on the CPU path updates the buffers in place, so a clone would share them.
#[derive(Debug)]
pub struct Sgd {
    /// The SGD momentum μ (0 for plain SGD; 0.9 in MoCo).
    pub momentum: f64,
    /// The L2 penalty added to each gradient as `wd·θ` (PyTorch's `weight_decay`).
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
            // In place on CPU from the second step on; returns the buffer to keep.
            if let Some(b) = crate::kernels::update::sgd_step(var, g, self.buffers.get(name), lr, self.momentum, self.weight_decay)? {
                self.buffers.insert(name.clone(), b);
            }
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

    /// The in-place CPU update (second step on) gives the candle ops' bits: five steps with the
    /// CPU kernels on and off, with and without weight decay, a tensor larger than one
    /// parallel chunk.
    #[test]
    fn in_place_update_gives_the_composed_bits() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let n = crate::kernels::ELEMWISE_CHUNK + 77;
        let init: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let coef = Tensor::from_vec((0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect::<Vec<_>>(), n, &Device::Cpu).unwrap();
        for wd in [0.0, 5e-4] {
            let run = |fused: bool| {
                crate::kernels::set_enabled(fused);
                let w = Var::new(init.as_slice(), &Device::Cpu).unwrap();
                let params = vec![("w".to_string(), w.clone())];
                let mut opt = Sgd::new(0.9, wd);
                let mut first_buffer = None;
                for step in 0..5 {
                    let loss = (w.as_tensor().sqr().unwrap() * &coef).unwrap().sum_all().unwrap();
                    let grads = loss.backward().unwrap();
                    opt.step(&params, &grads, 0.05 + 0.01 * step as f64).unwrap();
                    first_buffer.get_or_insert_with(|| opt.buffers["w"].clone());
                }
                crate::kernels::set_enabled(true);
                // The in-place path keeps updating the first step's buffer; the composed one
                // replaces it every step.
                let updated_in_place = first_buffer.unwrap().to_vec1::<f32>().unwrap() == opt.buffers["w"].to_vec1::<f32>().unwrap();
                assert_eq!(updated_in_place, fused, "in-place path taken: {updated_in_place}");
                (w.as_tensor().to_vec1::<f32>().unwrap(), opt.buffers["w"].to_vec1::<f32>().unwrap())
            };
            let (fused, composed) = (run(true), run(false));
            assert_ne!(fused.0, init, "the parameter moved");
            let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same(&fused.0, &composed.0), "wd {wd}: parameters differ");
            assert!(same(&fused.1, &composed.1), "wd {wd}: momentum buffers differ");
        }
    }
}
