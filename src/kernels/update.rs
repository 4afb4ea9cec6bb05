//! In-place parameter updates: the key encoder's EMA ([`ema`]) and one SGD step with momentum
//! and weight decay ([`sgd_step`]). On CPU each is one or two parallel passes over the
//! parameter's own storage, no temporaries (candle's ops allocate a tensor per operation, the
//! scalar ones single-threaded); elsewhere, or with the kernels off, the same arithmetic as
//! candle ops.

use super::cpu::{f32_slice, f32_slice_mut, use_cpu_kernels, ELEMWISE_CHUNK};
use candle_core::{CpuStorage, DType, Layout, Result, Tensor, Var};
use rayon::prelude::*;

/// `key ← m·key + (1−m)·query`, in place on CPU (when `key` is contiguous), else as candle ops
/// whose result replaces `key` (detached).
pub fn ema(key: &Var, query: &Tensor, m: f64) -> Result<()> {
    if use_cpu_kernels(key.device()) && key.as_tensor().is_contiguous() {
        let (m, m1) = (m as f32, (1.0 - m) as f32);
        zip_in_place(key.as_tensor(), &query.contiguous()?, "ema", move |k, q| *k = m * *k + m1 * q)
    } else {
        let new = ((key.as_tensor() * m)? + (query * (1.0 - m))?)?;
        key.set(&new.detach())
    }
}

/// One step of `torch.optim.SGD` (dampening 0, no Nesterov) on `theta` from its gradient:
/// `g ← g + wd·θ; buf ← μ·buf + g` (`buf = g` when there is none yet); `θ ← θ − lr·buf`.
/// Returns the momentum buffer to keep for the next step (`None` when `momentum` is 0).
///
/// With a buffer, on CPU, and contiguous f32 tensors of one shape: the buffer and then `θ` are
/// updated in place (the returned buffer is `buf` itself, so a copy of it shares the update);
/// otherwise candle ops make a new buffer and a new `θ`. Both give the same bits.
pub fn sgd_step(theta: &Var, grad: &Tensor, buf: Option<&Tensor>, lr: f64, momentum: f64, weight_decay: f64) -> Result<Option<Tensor>> {
    if let Some(b) = buf {
        let t = theta.as_tensor();
        let in_place = use_cpu_kernels(t.device())
            && momentum != 0.0
            && [t, grad, b]
                .iter()
                .all(|x| x.is_contiguous() && x.dims() == t.dims() && x.dtype() == DType::F32);
        if in_place {
            b.inplace_op3(
                grad,
                t,
                &MomentumUpdate {
                    m: momentum as f32,
                    wd: weight_decay as f32,
                    decay: weight_decay != 0.0,
                },
            )?;
            // θ ← θ − (buf·lr + 0), as the candle ops below would.
            let lr = lr as f32;
            zip_in_place(t, b, "sgd_descend", move |t, b| *t -= b * lr + 0.0)?;
            return Ok(Some(b.clone()));
        }
    }
    let t = theta.as_tensor().detach();
    let mut g = grad.detach();
    if weight_decay != 0.0 {
        g = (g + (&t * weight_decay)?)?;
    }
    let (step, keep) = if momentum != 0.0 {
        let b = match buf {
            Some(b) => ((b * momentum)? + g)?,
            // A tensor of its own (not the gradient's storage): later steps update it in place.
            None => g.copy()?,
        };
        (b.clone(), Some(b))
    } else {
        (g, None)
    };
    theta.set(&(t - (step * lr)?)?)?;
    Ok(keep)
}

/// `buf ← (buf·μ + 0) + (g + (θ·wd + 0))` in place on `buf` (arguments `g`, `θ`): the same f32
/// operations, in the same order, as the candle ops of [`sgd_step`]'s composed path (`affine`
/// adds its zero offset), so both paths give the same bits.
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

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<()> {
        let (g, th) = (f32_slice(s2, l2)?, f32_slice(s3, l3)?);
        let buf = f32_slice_mut(s1, l1, "sgd_momentum")?;
        if buf.len() != g.len() || buf.len() != th.len() {
            candle_core::bail!("sgd_momentum: {} / {} / {} values", buf.len(), g.len(), th.len());
        }
        let (m, wd, decay) = (self.m, self.wd, self.decay);
        let chunk = ELEMWISE_CHUNK;
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

/// `f(d, s)` for every element `d` of `dst` and `s` of `src`, in place on `dst` (CPU,
/// contiguous f32 tensors of one length), in parallel chunks. `name` names the op in errors.
fn zip_in_place(dst: &Tensor, src: &Tensor, name: &'static str, f: impl Fn(&mut f32, f32) + Sync) -> Result<()> {
    dst.inplace_op2(src, &ZipInPlace { name, f })
}

struct ZipInPlace<F> {
    name: &'static str,
    f: F,
}

impl<F: Fn(&mut f32, f32) + Sync> candle_core::InplaceOp2 for ZipInPlace<F> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<()> {
        let src = f32_slice(s2, l2)?;
        let dst = f32_slice_mut(s1, l1, self.name)?;
        if dst.len() != src.len() {
            candle_core::bail!("{}: {} values to update from {}", self.name, dst.len(), src.len());
        }
        dst.par_chunks_mut(ELEMWISE_CHUNK)
            .zip(src.par_chunks(ELEMWISE_CHUNK))
            .for_each(|(d, s)| d.iter_mut().zip(s).for_each(|(d, &s)| (self.f)(d, s)));
        Ok(())
    }
}
