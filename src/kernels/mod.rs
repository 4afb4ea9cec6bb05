//! CPU kernels that replace slow composed candle ops in the training step, as candle custom
//! ops with their own backward (so autograd is unchanged). On other devices the callers use
//! candle's own ops.
//!
//! - [`conv`]: convolution as per-image im2col + GEMM (the `gemm` crate candle itself uses), one
//!   autograd node whose backward computes both gradients per image (candle's CPU conv
//!   grad-input is a direct loop).
//! - [`batch_norm`]: train-mode BatchNorm with per-group statistics, forward and backward each
//!   in one fused pass over the data.

pub mod batch_norm;
pub mod conv;

use candle_core::{CpuStorage, Device, Layout, Result, Tensor};
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

/// The contiguous f32 slice a CPU storage + layout designates.
pub(crate) fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("custom kernel: input must be contiguous"),
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
