//! The convolution's tuning knobs, process-wide, in one place: which paths may run and the
//! im2col path's GEMM widths. The training step runs with [`Knobs::default`]; the A/B examples
//! (`examples/conv_ab.rs`, `examples/wino_probe.rs`) [`set`] others to time the paths against
//! each other in one process (this machine's speed moves too much between processes). Every
//! kernel reads them through [`get`] when it is called.
//!
//! Benchmarks only: the weight gradient's bits depend on [`Knobs::target_gw_cols`], and the
//! knobs are global, so tests never change them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

/// The convolution's switches and GEMM widths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Knobs {
    /// Output columns per GEMM of the im2col forward and grad-input (at least 1): a block of
    /// the column matrix small enough to stay in L2; the deep layers' narrow planes put
    /// several images side by side to reach it.
    pub target_cols: usize,
    /// Output positions per block of the im2col weight gradient, its GEMMs' inner dimension
    /// (at least 1).
    pub target_gw_cols: usize,
    /// im2col / col2im of same-width convolutions (stride 1, padding `(k − 1)/2`) as one
    /// shifted run of the plane per tap; off, row by row.
    pub shifted_runs: bool,
    /// The implicit forward and grad-input on the 6×64 wide tile when the output channels are
    /// a multiple of 64; off, on the 8×32 tile.
    pub wide_fwd: bool,
    /// The weight gradients on the wide tile (implicit, over im2col columns, and Winograd's);
    /// off, every weight gradient runs on the `gemm` crate over im2col columns.
    pub wide_gw: bool,
    /// Winograd for the 3×3 stride-1 layers it applies to; off, the implicit GEMM or im2col.
    pub winograd: bool,
}

/// The values the training step runs with (chosen with `examples/conv_ab.rs` and
/// `examples/wino_probe.rs`; the figures are in bench/README.md).
const DEFAULT: Knobs = Knobs {
    target_cols: 128,
    target_gw_cols: 256,
    shifted_runs: true,
    wide_fwd: true,
    wide_gw: true,
    winograd: true,
};

impl Default for Knobs {
    fn default() -> Self {
        DEFAULT
    }
}

/// The knobs' current values, one atomic each.
struct Current {
    target_cols: AtomicUsize,
    target_gw_cols: AtomicUsize,
    shifted_runs: AtomicBool,
    wide_fwd: AtomicBool,
    wide_gw: AtomicBool,
    winograd: AtomicBool,
}

static CURRENT: Current = Current {
    target_cols: AtomicUsize::new(DEFAULT.target_cols),
    target_gw_cols: AtomicUsize::new(DEFAULT.target_gw_cols),
    shifted_runs: AtomicBool::new(DEFAULT.shifted_runs),
    wide_fwd: AtomicBool::new(DEFAULT.wide_fwd),
    wide_gw: AtomicBool::new(DEFAULT.wide_gw),
    winograd: AtomicBool::new(DEFAULT.winograd),
};

/// The knobs in force.
pub fn get() -> Knobs {
    Knobs {
        target_cols: CURRENT.target_cols.load(Relaxed),
        target_gw_cols: CURRENT.target_gw_cols.load(Relaxed),
        shifted_runs: CURRENT.shifted_runs.load(Relaxed),
        wide_fwd: CURRENT.wide_fwd.load(Relaxed),
        wide_gw: CURRENT.wide_gw.load(Relaxed),
        winograd: CURRENT.winograd.load(Relaxed),
    }
}

/// Put `k` in force for every later convolution, process-wide (widths below 1 count as 1).
pub fn set(k: Knobs) {
    CURRENT.target_cols.store(k.target_cols.max(1), Relaxed);
    CURRENT.target_gw_cols.store(k.target_gw_cols.max(1), Relaxed);
    CURRENT.shifted_runs.store(k.shifted_runs, Relaxed);
    CURRENT.wide_fwd.store(k.wide_fwd, Relaxed);
    CURRENT.wide_gw.store(k.wide_gw, Relaxed);
    CURRENT.winograd.store(k.winograd, Relaxed);
}
