//! InfoNCE on CPU as one autograd node: from `l_pos (N, 1)` and `l_neg (N, K)` straight to the
//! mean loss, `mean_i [logsumexp(z_i) − z_i0]` with `z = [l_pos, l_neg] / τ`, without building
//! the `(N, 1+K)` logits (candle's cat, division and composed log-softmax each allocate and
//! walk an `N×K` tensor forwards and again backwards: at K = 65,536 that cost more than the
//! encoder at width 8). The backward writes `∂/∂z = (softmax(z) − e₀)/N`, scaled by 1/τ, in one
//! pass. With `mask_diagonal` (end-to-end: the batch's own keys are the negatives) `l_neg[i, i]`
//! is left out of row i, as the composed path's −1e9 does.

use super::{f32_slice, tensor_vec};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

struct InfoNce {
    inv_tau: f32,
    mask_diagonal: bool,
    /// Per row: (max of z, Σ exp(z − max)) from the forward, for the backward.
    rows: Arc<Mutex<Vec<(f32, f32)>>>,
    /// Rows whose positive is the (first) largest logit.
    hits: Arc<Mutex<usize>>,
}

impl InfoNce {
    fn skip(&self, i: usize, j: usize) -> bool {
        self.mask_diagonal && i == j
    }
}

impl CustomOp2 for InfoNce {
    fn name(&self) -> &'static str {
        "info_nce"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (pos, neg) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        let (n, k) = l2.shape().dims2()?;
        if pos.len() != n {
            candle_core::bail!("info_nce: l_pos has {} rows, l_neg {n}", pos.len());
        }
        let t = self.inv_tau;
        let rows: Vec<(f32, f32, f64, bool)> = (0..n)
            .into_par_iter()
            .map(|i| {
                let z0 = pos[i] * t;
                let row = &neg[i * k..(i + 1) * k];
                let mut mneg = f32::NEG_INFINITY;
                for (j, &v) in row.iter().enumerate() {
                    if !self.skip(i, j) {
                        mneg = mneg.max(v * t);
                    }
                }
                let m = mneg.max(z0);
                let mut s = (z0 - m).exp();
                for (j, &v) in row.iter().enumerate() {
                    if !self.skip(i, j) {
                        s += (v * t - m).exp();
                    }
                }
                (m, s, (s.ln() + m - z0) as f64, z0 >= mneg)
            })
            .collect();
        let loss = rows.iter().map(|r| r.2).sum::<f64>() / n.max(1) as f64;
        *self.hits.lock().unwrap() = rows.iter().filter(|r| r.3).count();
        *self.rows.lock().unwrap() = rows.iter().map(|r| (r.0, r.1)).collect();
        Ok((CpuStorage::F32(vec![loss as f32]), Shape::from(())))
    }

    fn bwd(&self, pos: &Tensor, neg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, k) = neg.dims2()?;
        let g = grad.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()? * self.inv_tau / n.max(1) as f32;
        let t = self.inv_tau;
        let stats = self.rows.lock().unwrap().clone();
        let (p, l) = (tensor_vec(pos)?, tensor_vec(neg)?);
        let mut gp = vec![0f32; n];
        let mut gn = vec![0f32; n * k];
        gn.par_chunks_mut(k.max(1))
            .zip(gp.par_iter_mut())
            .enumerate()
            .for_each(|(i, (row_g, gpi))| {
                let (m, s) = stats[i];
                let inv_s = 1.0 / s;
                *gpi = g * ((p[i] * t - m).exp() * inv_s - 1.0);
                for (j, (o, &v)) in row_g.iter_mut().zip(&l[i * k..(i + 1) * k]).enumerate() {
                    *o = if self.skip(i, j) { 0.0 } else { g * (v * t - m).exp() * inv_s };
                }
            });
        Ok((
            Some(Tensor::from_vec(gp, pos.shape(), pos.device())?),
            Some(Tensor::from_vec(gn, (n, k), neg.device())?),
        ))
    }
}

/// The InfoNCE loss (scalar) and the fraction of rows whose positive is the largest logit, from
/// `l_pos (N, 1)` and `l_neg (N, K)` (before the temperature).
pub fn info_nce(l_pos: &Tensor, l_neg: &Tensor, temperature: f64, mask_diagonal: bool) -> Result<(Tensor, f32)> {
    let rows = Arc::new(Mutex::new(Vec::new()));
    let hits = Arc::new(Mutex::new(0));
    let op = InfoNce {
        inv_tau: (1.0 / temperature) as f32,
        mask_diagonal,
        rows,
        hits: hits.clone(),
    };
    let n = l_neg.dim(0)?;
    let loss = l_pos.contiguous()?.apply_op2(&l_neg.contiguous()?, op)?;
    let acc = *hits.lock().unwrap() as f32 / n.max(1) as f32;
    Ok((loss, acc))
}

/// `l_neg = q · negᵀ` for negatives that take no gradient (the queue, memory-bank samples):
/// candle's matmul backward also computes `qᵀ · grad`, a `(C, K)` gradient for the detached
/// negatives that is thrown away — at K = 65,536 an extra GEMM as large as the forward plus
/// a 32 MB buffer zeroed and added each step. This node's backward returns only `grad · neg`.
struct NegLogits;

/// Row-major `dst (m, n) = lhs · rhs` on all threads; strides are `(row, col)` pairs.
#[allow(clippy::too_many_arguments)]
fn gemm_par(m: usize, n: usize, k: usize, dst: &mut [f32], lhs: &[f32], lhs_rc: (usize, usize), rhs: &[f32], rhs_rc: (usize, usize)) {
    assert!(dst.len() == m * n);
    assert!(m == 0 || k == 0 || lhs.len() > (m - 1) * lhs_rc.0 + (k - 1) * lhs_rc.1);
    assert!(k == 0 || n == 0 || rhs.len() > (k - 1) * rhs_rc.0 + (n - 1) * rhs_rc.1);
    // The asserts above are the bounds the callee's SAFETY relies on, checked in release too.
    super::conv::sgemm_ld_par(
        m,
        n,
        k,
        dst,
        n,
        false,
        lhs,
        lhs_rc,
        rhs,
        rhs_rc,
        gemm::Parallelism::Rayon(rayon::current_num_threads()),
    )
}

impl CustomOp2 for NegLogits {
    fn name(&self) -> &'static str {
        "neg_logits"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (q, neg) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        let (n, c) = l1.shape().dims2()?;
        let (k, c2) = l2.shape().dims2()?;
        if c != c2 {
            candle_core::bail!("neg_logits: q is (N, {c}), negatives (K, {c2})");
        }
        let mut out = vec![0f32; n * k];
        gemm_par(n, k, c, &mut out, q, (c, 1), neg, (1, c));
        Ok((CpuStorage::F32(out), Shape::from((n, k))))
    }

    fn bwd(&self, q: &Tensor, neg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, c) = q.dims2()?;
        let k = neg.dim(0)?;
        let (g, nv) = (grad.contiguous()?, neg.contiguous()?);
        let (gs, gl) = g.storage_and_layout();
        let (ns, nl) = nv.storage_and_layout();
        let mut out = vec![0f32; n * c];
        match (&*gs, &*ns) {
            (candle_core::Storage::Cpu(gs), candle_core::Storage::Cpu(ns)) => {
                gemm_par(n, c, k, &mut out, f32_slice(gs, gl)?, (k, 1), f32_slice(ns, nl)?, (c, 1));
            }
            _ => candle_core::bail!("neg_logits: CPU tensors only"),
        }
        Ok((Some(Tensor::from_vec(out, (n, c), q.device())?), None))
    }
}

/// `q (N, C) · negativesᵀ (C, K)` → `(N, K)`, with a gradient for `q` only (the negatives are
/// treated as constants: use it only for detached negatives).
pub fn neg_logits(q: &Tensor, negatives: &Tensor) -> Result<Tensor> {
    q.contiguous()?.apply_op2(&negatives.contiguous()?, NegLogits)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    #[test]
    fn neg_logits_matches_matmul_and_gives_grad_for_q_only() {
        let dev = Device::Cpu;
        let (n, c, k) = (5, 7, 13);
        let q = Var::from_tensor(&Tensor::randn(0f32, 1., (n, c), &dev).unwrap()).unwrap();
        let neg = Tensor::randn(0f32, 1., (k, c), &dev).unwrap();
        let w = Tensor::randn(0f32, 1., (n, k), &dev).unwrap();
        let ours = super::neg_logits(q.as_tensor(), &neg).unwrap();
        let theirs = q.as_tensor().matmul(&neg.t().unwrap()).unwrap();
        let d = (&ours - &theirs)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-5, "forward differs by {d}");
        let g_ours = (ours * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let g_theirs = (theirs * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let (a, b) = (g_ours.get(q.as_tensor()).unwrap(), g_theirs.get(q.as_tensor()).unwrap());
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 1e-5, "grad q differs by {d}");
        assert!(g_ours.get(&neg).is_none(), "no gradient is made for the detached negatives");
    }
}
