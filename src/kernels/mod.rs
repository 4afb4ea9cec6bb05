//! CPU kernels that replace slow composed candle ops in the training step, as candle custom
//! ops with their own backward (so autograd is unchanged). On other devices the callers use
//! candle's own ops.
//!
//! - [`conv`]: convolution as per-image im2col + GEMM (the `gemm` crate candle itself uses), one
//!   autograd node whose backward computes both gradients per image (candle's CPU conv
//!   grad-input is a direct loop).
//! - [`infonce`]: the InfoNCE loss from the positive and negative logits, one node.
//! - [`batch_norm`]: train-mode BatchNorm with per-group statistics, forward and backward each
//!   in one fused pass over the data.

pub mod batch_norm;
pub mod conv;
pub mod infonce;
pub mod packed;
pub mod winograd;

use candle_core::{CpuStorage, Device, Layout, Result, Tensor};
use rayon::prelude::*;
use std::cell::Cell;

thread_local! {
    static ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Turn the CPU kernels off on this thread (the layers then use candle's own ops, as on CUDA)
/// or back on. For `moco device-check` and the candle baseline of `moco bench step --candle-ops`;
/// training always runs with them on. Per thread, so parallel tests do not see each other's.
pub fn set_enabled(on: bool) {
    ENABLED.with(|e| e.set(on));
}

/// Whether the layers take the CPU kernels on `device` (CPU, and enabled on this thread).
pub fn use_cpu_kernels(device: &Device) -> bool {
    device.is_cpu() && ENABLED.with(|e| e.get())
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

/// Elements per parallel task of the elementwise kernels.
pub(crate) const ELEMWISE_CHUNK: usize = 1 << 15;

/// `vec![0f32; n]` with the zeroing (and the page faults of fresh memory) spread over the
/// thread pool: an activation-sized allocation zeroed on the calling thread alone left the
/// other core idle (`perf`: memset was 3.4% of a training step, all on the main thread).
pub(crate) fn zeros(n: usize) -> Vec<f32> {
    if n < ELEMWISE_CHUNK {
        return vec![0f32; n];
    }
    let mut v = Vec::with_capacity(n);
    v.par_extend(rayon::iter::repeat_n(0f32, n));
    v
}

/// A vector of `n` floats left unwritten, for a kernel's output that the kernel writes in full
/// before anything reads it: no zeroing pass over an activation-sized buffer (the zeroing in
/// [`zeros`] was 3.1% of a batch-64 training step's samples, `perf`). candle's CPU backend
/// allocates its outputs the same way (`alloc_uninit`).
///
/// # Safety
/// Every element must be written before any is read, and before the vector is handed on.
/// (Clippy's `uninit_vec` flags the `set_len` below: the elements are uninitialised until the
/// kernel writes them; nothing reads them before, which the NaN fill checks in debug builds.)
#[allow(clippy::uninit_vec)]
pub(crate) unsafe fn unwritten(n: usize) -> Vec<f32> {
    // Debug builds (the test suite) fill it with NaN, so an element a kernel forgets to write
    // turns into a NaN (which the tests' comparisons count as an infinite error) instead of
    // reading as the zero of a fresh page.
    if cfg!(debug_assertions) {
        return vec![f32::NAN; n];
    }
    let mut v = Vec::with_capacity(n);
    // SAFETY: the capacity is n; the caller writes all n elements before reading (above).
    unsafe { v.set_len(n) };
    v
}

/// `max(0, a + b)` for two CPU tensors of one shape, one autograd node.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu)
}

/// The contiguous f32 slice a CPU storage + layout designates.
pub(crate) fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("custom kernel: input must be contiguous"),
    }
}

/// The f32 slice a mutable CPU storage + contiguous layout designates (in-place ops: the EMA,
/// SGD); `op` names the op in the error.
pub(crate) fn f32_slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout, op: &str) -> Result<&'a mut [f32]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{op}: tensor must be contiguous")))?;
    match s {
        CpuStorage::F32(v) => Ok(&mut v[a..b]),
        _ => candle_core::bail!("{op}: f32 tensors only"),
    }
}

/// `f(d, s)` for every element `d` of `dst` and `s` of `src`, in place on `dst` (CPU,
/// contiguous f32 tensors of one length), in parallel chunks: the EMA's and SGD's updates.
/// `name` names the op in errors.
pub(crate) fn zip_in_place(dst: &Tensor, src: &Tensor, name: &'static str, f: impl Fn(&mut f32, f32) + Sync) -> Result<()> {
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

/// Copy a CPU tensor's data (made contiguous) to a Vec.
pub(crate) fn tensor_vec(t: &Tensor) -> Result<Vec<f32>> {
    t.contiguous()?.flatten_all()?.to_vec1::<f32>()
}

/// A raw pointer that may cross threads; users write disjoint ranges only.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub *mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
