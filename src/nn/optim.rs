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
            // From the second step on, on CPU: two in-place parallel passes, no temporaries
            // (six candle ops per parameter before, the scalar ones single-threaded).
            if let Some(b) = self.buffers.get(name) {
                let theta = var.as_tensor();
                let fused = crate::kernels::use_cpu_kernels(theta.device())
                    && self.momentum != 0.0
                    && [theta, g, b]
                        .iter()
                        .all(|t| t.is_contiguous() && t.dims() == theta.dims() && t.dtype() == candle_core::DType::F32);
                if fused {
                    b.inplace_op3(
                        g,
                        theta,
                        &MomentumUpdate {
                            m: self.momentum as f32,
                            wd: self.weight_decay as f32,
                            decay: self.weight_decay != 0.0,
                        },
                    )?;
                    // θ ← θ − (buf·lr + 0), as the candle ops would.
                    let lr = lr as f32;
                    crate::kernels::zip_in_place(theta, b, "sgd_descend", move |t, b| *t -= b * lr + 0.0)?;
                    continue;
                }
            }
            let theta = var.as_tensor().detach();
            let mut g = g.detach();
            if self.weight_decay != 0.0 {
                g = (g + (&theta * self.weight_decay)?)?;
            }
            let buf = if self.momentum != 0.0 {
                let b = match self.buffers.get(name) {
                    Some(b) => ((b * self.momentum)? + g)?,
                    // A tensor of its own (not the gradient's storage): later steps update it
                    // in place.
                    None => g.copy()?,
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

/// `buf ← (buf·μ + 0) + (g + (θ·wd + 0))` in place on `buf` (arguments `g`, `θ`): the same f32
/// operations, in the same order, as the candle ops of the first step's path (`affine` adds
/// its zero offset), so both paths give the same bits.
struct MomentumUpdate {
    m: f32,
    wd: f32,
    /// Whether the decay term is added (decided in f64, as the composed path does: a decay
    /// that rounds to 0 in f32 still adds `θ·0 + 0`).
    decay: bool,
}

impl candle_core::InplaceOp3 for MomentumUpdate {
    fn name(&self) -> &'static str {
        "sgd_momentum"
    }

    fn cpu_fwd(
        &self,
        s1: &mut candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
        s3: &candle_core::CpuStorage,
        l3: &candle_core::Layout,
    ) -> Result<()> {
        use rayon::prelude::*;
        let (g, th) = (crate::kernels::f32_slice(s2, l2)?, crate::kernels::f32_slice(s3, l3)?);
        let buf = crate::kernels::f32_slice_mut(s1, l1, "sgd_momentum")?;
        if buf.len() != g.len() || buf.len() != th.len() {
            candle_core::bail!("sgd_momentum: {} / {} / {} values", buf.len(), g.len(), th.len());
        }
        let (m, wd, decay) = (self.m, self.wd, self.decay);
        let chunk = crate::kernels::ELEMWISE_CHUNK;
        buf.par_chunks_mut(chunk)
            .zip(g.par_chunks(chunk).zip(th.par_chunks(chunk)))
            .for_each(|(b, (g, th))| {
                for ((b, &g), &t) in b.iter_mut().zip(g).zip(th) {
                    let g = if decay { g + (t * wd + 0.0) } else { g };
                    *b = (*b * m + 0.0) + g;
                }
            });
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
