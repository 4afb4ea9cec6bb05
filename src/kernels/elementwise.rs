//! `max(0, a + b)`, the residual join, as one autograd node on CPU ([`add_relu`]), and the
//! gradient through a ReLU from its saved output ([`mask_by_output`], shared with the fused
//! BN + add + ReLU of [`super::batch_norm`]).

use super::cpu::{f32_slice, unwritten, use_cpu_kernels, ELEMWISE_CHUNK};
use candle_core::{CpuStorage, Layout, Result, Tensor};
use rayon::prelude::*;

/// `max(0, a + b)` (the residual join): on CPU one node whose backward masks the gradient once
/// for both inputs; elsewhere, or with the kernels off, candle's add and relu.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if use_cpu_kernels(a.device()) {
        a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu)
    } else {
        (a + b)?.relu()
    }
}

/// `max(0, a + b)` as one node; its backward passes `grad · [y > 0]` to both inputs (one pass,
/// one tensor shared by the two gradients).
struct AddRelu;

impl candle_core::CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "add_relu"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, candle_core::Shape)> {
        let (a, b) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        if l1.shape() != l2.shape() {
            candle_core::bail!("add_relu: shapes {:?} and {:?} differ", l1.shape(), l2.shape());
        }
        // SAFETY: the chunks below cover y and each writes all of its elements.
        let mut y = unsafe { unwritten(a.len()) };
        y.par_chunks_mut(ELEMWISE_CHUNK)
            .zip(a.par_chunks(ELEMWISE_CHUNK).zip(b.par_chunks(ELEMWISE_CHUNK)))
            .for_each(|(y, (a, b))| y.iter_mut().zip(a.iter().zip(b)).for_each(|(y, (a, b))| *y = (a + b).max(0.0)));
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }
    fn bwd(&self, a: &Tensor, _b: &Tensor, res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let gt = Tensor::from_vec(mask_by_output(grad, res)?, a.shape(), a.device())?;
        Ok((Some(gt.clone()), Some(gt)))
    }
}

/// The gradient through a ReLU from its saved output: `grad · [y > 0]` (PyTorch's
/// threshold_backward), one parallel pass reading both CPU tensors in place.
pub(crate) fn mask_by_output(grad: &Tensor, res: &Tensor) -> Result<Vec<f32>> {
    let grad = grad.contiguous()?;
    let (gs, gl) = grad.storage_and_layout();
    let (ys, yl) = res.storage_and_layout();
    let (candle_core::Storage::Cpu(gs), candle_core::Storage::Cpu(ys)) = (&*gs, &*ys) else {
        candle_core::bail!("relu mask: CPU only")
    };
    let (g, y) = (f32_slice(gs, gl)?, f32_slice(ys, yl)?);
    if g.len() != y.len() {
        candle_core::bail!("relu mask: gradient has {} elements, output {}", g.len(), y.len());
    }
    // SAFETY: the chunks below cover out and each writes all of its elements.
    let mut out = unsafe { unwritten(g.len()) };
    out.par_chunks_mut(ELEMWISE_CHUNK)
        .zip(g.par_chunks(ELEMWISE_CHUNK).zip(y.par_chunks(ELEMWISE_CHUNK)))
        .for_each(|(o, (g, y))| {
            o.iter_mut()
                .zip(g.iter().zip(y))
                .for_each(|(o, (g, y))| *o = if *y > 0.0 { *g } else { 0.0 })
        });
    Ok(out)
}
