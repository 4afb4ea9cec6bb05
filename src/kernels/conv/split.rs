//! How a convolution's work is cut: output columns into GEMM-sized blocks ([`Blocking`],
//! [`blocks`]) and the weight gradient into a fixed set of tasks whose partial sums are added
//! in order ([`gw_from_parts`]), so its bits do not depend on the thread count.

use super::geometry::ConvGeom;
use super::knobs;
use crate::kernels::sgemm::transpose_add;
use rayon::prelude::*;

/// How a convolution's output columns are cut into GEMMs: `imgs` whole images side by side
/// when one image's plane is narrow, else one image in bands of `rows` output rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Blocking {
    /// Images per block.
    pub imgs: usize,
    /// Output rows per block.
    pub rows: usize,
}

/// The blocking of the im2col forward and grad-input ([`knobs::Knobs::target_cols`] columns).
pub(super) fn blocking(g: &ConvGeom) -> Blocking {
    blocking_for(g, knobs::get().target_cols)
}

/// Blocks of about `target` output columns.
pub(super) fn blocking_for(g: &ConvGeom, target: usize) -> Blocking {
    let (ho, wo) = (g.ho(), g.wo());
    if ho * wo >= target {
        Blocking {
            imgs: 1,
            rows: (target / wo).clamp(1, ho),
        }
    } else {
        Blocking {
            imgs: target.div_ceil(ho * wo).clamp(1, g.n.max(1)),
            rows: ho,
        }
    }
}

/// The blocks of one task, `(i0, nb, oy0, oy1)`: images `lo..hi` cut by `bl`.
pub(super) fn blocks(lo: usize, hi: usize, ho: usize, bl: Blocking) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    (lo..hi).step_by(bl.imgs).flat_map(move |i0| {
        (0..ho)
            .step_by(bl.rows)
            .map(move |oy0| (i0, bl.imgs.min(hi - i0), oy0, (oy0 + bl.rows).min(ho)))
    })
}

/// The weight gradient's work is cut into this many fixed tasks (taps × image chunks), whatever
/// the number of threads, and the image chunks' partial sums are added in order, so a run
/// gives the same bits with any number of threads (on one kind of CPU: the `gemm` crate picks
/// its SIMD kernel per machine).
pub(super) const GW_TASKS: usize = 8;

/// Run the weight gradient's fixed tasks — `task(ci, p)` returns the `gWᵀ` rows
/// `p·rows_per..` (`(rows, Cout)`) over image chunk `ci` — in parallel, and add their
/// transposes into `gW (Cout, rl)`, image chunks in order: the same bits whatever the number
/// of threads.
pub(super) fn gw_from_parts(
    chunks: usize,
    parts: usize,
    rows_per: usize,
    rl: usize,
    cout: usize,
    task: impl Fn(usize, usize) -> Vec<f32> + Sync,
) -> Vec<f32> {
    let tasks: Vec<(usize, usize)> = (0..chunks).flat_map(|ci| (0..parts).map(move |p| (ci, p))).collect();
    let partial: Vec<Vec<f32>> = tasks.into_par_iter().map(|(ci, p)| task(ci, p)).collect();
    let mut gw = vec![0f32; cout * rl];
    // Chunk-major, as the tasks were listed.
    for (t, part) in partial.iter().enumerate() {
        transpose_add(part, part.len() / cout, cout, &mut gw, rl, (t % parts) * rows_per);
    }
    gw
}
