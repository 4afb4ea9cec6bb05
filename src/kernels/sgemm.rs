//! Row-major f32 products on the `gemm` crate (the one candle itself uses), with any row
//! stride for the output and `(row, col)` strides for the operands so that transposed
//! operands need no copy ([`sgemm_ld`], [`sgemm_ld_par`]), and a blocked parallel transpose
//! ([`transpose`], [`transpose_add`]). Used by the convolutions' im2col path and weight
//! gradients and by InfoNCE's product with the queue.

use rayon::prelude::*;

/// `(rows, cols)` row-major → its transpose.
pub(crate) fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; a.len()];
    transpose_add(a, rows, cols, &mut t, rows, 0);
    t
}

/// `out[c·ldo + col0 + r] += a[r·cols + c]` for the `(rows, cols)` row-major `a`: a transpose
/// added into columns `col0..col0+rows` of `out`, in 32×32 tiles (a plain loop strides
/// through memory on one side, a cache miss per element for a deep layer's weight), rows of
/// `out` in parallel.
pub(crate) fn transpose_add(a: &[f32], rows: usize, cols: usize, out: &mut [f32], ldo: usize, col0: usize) {
    const T: usize = 32;
    out.par_chunks_mut(ldo * T)
        .take(cols.div_ceil(T))
        .enumerate()
        .for_each(|(cb, block)| {
            let c0 = cb * T;
            for r0 in (0..rows).step_by(T) {
                for c in c0..(c0 + T).min(cols) {
                    let dst = &mut block[(c - c0) * ldo + col0 + r0..];
                    for r in r0..(r0 + T).min(rows) {
                        dst[r - r0] += a[r * cols + c];
                    }
                }
            }
        });
}

/// Row-major `dst (m, n) = [dst +] lhs · rhs` into a `dst` whose rows are `ld` apart,
/// single-threaded (callers parallelise over images). Strides are `(row, col)` pairs so that
/// transposed operands need no copy.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm_ld(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    ld: usize,
    accumulate: bool,
    lhs: &[f32],
    lhs_rc: (usize, usize),
    rhs: &[f32],
    rhs_rc: (usize, usize),
) {
    sgemm_ld_par(m, n, k, dst, ld, accumulate, lhs, lhs_rc, rhs, rhs_rc, gemm::Parallelism::None)
}

/// [`sgemm_ld`] with gemm's own threading (`Parallelism::Rayon(n)` for one large product).
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm_ld_par(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    ld: usize,
    accumulate: bool,
    lhs: &[f32],
    lhs_rc: (usize, usize),
    rhs: &[f32],
    rhs_rc: (usize, usize),
    par: gemm::Parallelism,
) {
    assert!(m <= 1 || ld >= n, "rows of dst overlap");
    assert!(m == 0 || n == 0 || dst.len() >= (m - 1) * ld + n);
    assert!(m == 0 || k == 0 || lhs.len() > (m - 1) * lhs_rc.0 + (k - 1) * lhs_rc.1);
    assert!(k == 0 || n == 0 || rhs.len() > (k - 1) * rhs_rc.0 + (n - 1) * rhs_rc.1);
    // SAFETY: the bounds above hold for every index gemm touches; dst does not alias lhs/rhs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            ld as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_rc.1 as isize,
            lhs_rc.0 as isize,
            rhs.as_ptr(),
            rhs_rc.1 as isize,
            rhs_rc.0 as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}
