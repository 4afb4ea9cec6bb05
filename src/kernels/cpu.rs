//! What every CPU kernel shares: the per-thread switch that sends the ops to candle's composed
//! path instead ([`set_enabled`]), reading CPU storage as `f32` slices, output buffers that are
//! zeroed in parallel or left unwritten, and a raw pointer that crosses threads. Nothing here
//! knows any op; every other kernel module builds on it.

use candle_core::{CpuStorage, Device, Layout, Result, Tensor};
use rayon::prelude::*;
use std::cell::Cell;

thread_local! {
    static ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Turn the CPU kernels off on this thread (the ops then take candle's composed path, as on
/// CUDA) or back on. For `moco device-check` and the candle baseline of `moco bench step
/// --candle-ops`; training always runs with them on. Per thread, so parallel tests do not see
/// each other's.
pub fn set_enabled(on: bool) {
    ENABLED.with(|e| e.set(on));
}

/// Whether the ops take their CPU kernel on `device` (CPU, and enabled on this thread).
pub(crate) fn use_cpu_kernels(device: &Device) -> bool {
    device.is_cpu() && ENABLED.with(|e| e.get())
}

/// Elements per parallel task of the elementwise kernels (a tensor larger than this is
/// split between the threads).
pub const ELEMWISE_CHUNK: usize = 1 << 15;

/// `vec![0f32; n]` with the zeroing (and the page faults of fresh memory) spread over the
/// thread pool: an activation-sized buffer zeroed on the calling thread alone leaves the other
/// cores idle.
pub(crate) fn zeros(n: usize) -> Vec<f32> {
    if n < ELEMWISE_CHUNK {
        return vec![0f32; n];
    }
    let mut v = Vec::with_capacity(n);
    v.par_extend(rayon::iter::repeat_n(0f32, n));
    v
}

/// A vector of `n` floats left unwritten, for a kernel's output that the kernel writes in full
/// before anything reads it: no zeroing pass over an activation-sized buffer. candle's CPU
/// backend allocates its outputs the same way (`alloc_uninit`).
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

/// Copy a CPU tensor's data (made contiguous) to a Vec.
pub(crate) fn tensor_vec(t: &Tensor) -> Result<Vec<f32>> {
    t.contiguous()?.flatten_all()?.to_vec1::<f32>()
}

/// A raw pointer that may cross threads; users write disjoint ranges only.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub *mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
