//! InfoNCE (the paper's Eq. 1) of queries against one positive and K negatives, as one op
//! that picks its path ([`info_nce`]). On CPU one autograd node from `l_pos (N, 1)` and
//! `l_neg (N, K)` straight to the mean loss, `mean_i [logsumexp(z_i) − z_i0]` with
//! `z = [l_pos, l_neg] / τ`, without building the `(N, 1+K)` logits (candle's cat, division
//! and composed log-softmax each allocate and walk an `N×K` tensor forwards and again
//! backwards, at K = 65,536 more work than a small encoder); its backward writes
//! `∂/∂z = (softmax(z) − e₀)/N`, scaled by 1/τ, in one pass, and the product with detached
//! negatives computes no gradient for them. Elsewhere, or with the kernels off, the composed
//! form: [`contrastive_logits`], [`info_nce_loss`], [`contrast_acc1`]. With `mask_diagonal`
//! (end-to-end: the batch's own keys are the negatives) `l_neg[i, i]` is left out of row i,
//! as the composed path's −1e9 does.

use super::cpu::{f32_slice, tensor_vec, use_cpu_kernels};
use super::sgemm::sgemm_ld_par;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// InfoNCE of queries against one positive and K negatives (as [`contrastive_logits`] then
/// [`info_nce_loss`]), and the fraction of rows whose positive wins ([`contrast_acc1`]). On
/// CPU the logits are never materialised; elsewhere, or with the kernels off
/// ([`super::set_enabled`]), the composed ops.
///
/// # Shapes
/// `q`, `k_pos`: `(N, C)`; `negatives`: `(K, C)` → scalar loss
pub fn info_nce(q: &Tensor, k_pos: &Tensor, negatives: &Tensor, temperature: f64, mask_diagonal: bool) -> Result<(Tensor, f32)> {
    if use_cpu_kernels(q.device()) {
        let l_pos = (q * k_pos)?.sum_keepdim(1)?; // (N, 1)
        let l_neg = if negatives.track_op() {
            q.matmul(&negatives.t()?)? // end-to-end: the negatives are keys with gradients
        } else {
            neg_logits(q, negatives)? // queue / bank: grad for q only
        }; // (N, K)
        fused_info_nce(&l_pos, &l_neg, temperature, mask_diagonal)
    } else {
        let logits = contrastive_logits(q, k_pos, negatives, temperature, mask_diagonal)?;
        Ok((info_nce_loss(&logits)?, contrast_acc1(&logits)?))
    }
}

/// Logits of one positive and K negatives, divided by the temperature.
///
/// # Shapes
/// - `q`, `k_pos`: `(N, C)`, L2-normalised; `negatives`: `(K, C)` rows (the queue, bank
///   samples, or the other keys of the batch)
/// - `mask_diagonal`: when the negatives are the batch's own keys (`end_to_end`, K = N),
///   `negatives[i]` is sample i's positive and is masked out of its row (K = N − 1 effective)
/// - returns `(N, 1+K)`; column 0 is the positive
pub fn contrastive_logits(q: &Tensor, k_pos: &Tensor, negatives: &Tensor, temperature: f64, mask_diagonal: bool) -> Result<Tensor> {
    let l_pos = (q * k_pos)?.sum_keepdim(1)?; // (N, 1)
    let l_neg = q.matmul(&negatives.t()?)?; // (N, K)
    let logits = (Tensor::cat(&[&l_pos, &l_neg], 1)? / temperature)?; // (N, 1+K)
    if !mask_diagonal {
        return Ok(logits);
    }
    let (n, k1) = logits.dims2()?;
    let mut mask = vec![0f32; n * k1];
    for i in 0..n.min(k1 - 1) {
        mask[i * k1 + 1 + i] = -1e9;
    }
    logits.broadcast_add(&Tensor::from_vec(mask, (n, k1), logits.device())?)
}

/// Cross-entropy with target 0 for every row: mean(logsumexp(row) − row[0]).
///
/// # Shapes
/// `(N, 1+K)` → scalar
pub fn info_nce_loss(logits: &Tensor) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    logp.narrow(1, 0, 1)?.mean_all()?.neg()
}

/// Fraction of rows whose largest logit is the positive (`contrast_acc1`).
pub fn contrast_acc1(logits: &Tensor) -> Result<f32> {
    let hits = logits.argmax(D::Minus1)?.eq(0u32)?.to_dtype(DType::F32)?;
    hits.mean_all()?.to_scalar::<f32>()
}

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
        let g = grad.to_dtype(DType::F32)?.to_scalar::<f32>()? * self.inv_tau / n.max(1) as f32;
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
/// `l_pos (N, 1)` and `l_neg (N, K)` (before the temperature), one CPU node.
fn fused_info_nce(l_pos: &Tensor, l_neg: &Tensor, temperature: f64, mask_diagonal: bool) -> Result<(Tensor, f32)> {
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
    sgemm_ld_par(
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

/// `q (N, C) · negativesᵀ (C, K)` → `(N, K)` on CPU, with a gradient for `q` only (the
/// negatives are treated as constants: use it only for detached negatives).
fn neg_logits(q: &Tensor, negatives: &Tensor) -> Result<Tensor> {
    q.contiguous()?.apply_op2(&negatives.contiguous()?, NegLogits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Rows scaled to unit length, as `nn::loss::l2_normalize` (which kernels do not import).
    fn l2_normalize(x: &Tensor) -> Result<Tensor> {
        let norm = x.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(1e-12)?;
        x.broadcast_div(&norm)
    }

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

    #[test]
    fn all_keys_equal_gives_ln_k_plus_1() {
        // Every logit equal → uniform softmax over 1+K → loss = ln(K+1).
        let dev = Device::Cpu;
        let q = l2_normalize(&Tensor::new(&[[1f32, 2., 3.], [0.5, -1., 2.]], &dev).unwrap()).unwrap();
        let k = q.clone();
        let kq = 7;
        let neg = Tensor::cat(&vec![q.narrow(0, 0, 1).unwrap(); kq], 0).unwrap();
        // Use the same key for each row: rows of q differ, so compare against each row's own k.
        let q0 = q.narrow(0, 0, 1).unwrap();
        let logits = contrastive_logits(&q0, &k.narrow(0, 0, 1).unwrap(), &neg, 0.07, false).unwrap();
        let loss = info_nce_loss(&logits).unwrap().to_scalar::<f32>().unwrap();
        assert!((loss - ((kq + 1) as f32).ln()).abs() < 1e-5, "{loss}");
    }

    #[test]
    fn matches_hand_loop_reference() {
        let dev = Device::Cpu;
        let q = l2_normalize(&Tensor::new(&[[1f32, 0., 1.], [0., 1., 1.], [1., 1., 0.], [1., -1., 0.5]], &dev).unwrap()).unwrap();
        let k = l2_normalize(&Tensor::new(&[[1f32, 0.2, 1.], [0.1, 1., 0.8], [1., 1., 0.3], [0.7, -1., 0.5]], &dev).unwrap()).unwrap();
        let neg = l2_normalize(&Tensor::new(&[[0f32, 0., 1.], [1., 0., 0.], [0.3, -0.2, 0.9]], &dev).unwrap()).unwrap();
        let t = 0.2;
        let loss = info_nce_loss(&contrastive_logits(&q, &k, &neg, t, false).unwrap())
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let (qv, kv, nv) = (
            q.to_vec2::<f32>().unwrap(),
            k.to_vec2::<f32>().unwrap(),
            neg.to_vec2::<f32>().unwrap(),
        );
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>() as f64;
        let mut expect = 0.0;
        for i in 0..4 {
            let pos = dot(&qv[i], &kv[i]) / t;
            let mut z = pos.exp();
            for n in &nv {
                z += (dot(&qv[i], n) / t).exp();
            }
            expect += z.ln() - pos;
        }
        expect /= 4.0;
        assert!((loss as f64 - expect).abs() < 1e-5, "{loss} vs {expect}");
    }

    #[test]
    fn masked_diagonal_equals_explicit_negatives() {
        let dev = Device::Cpu;
        let q = l2_normalize(&Tensor::new(&[[1f32, 0.], [0., 1.], [1., 1.]], &dev).unwrap()).unwrap();
        let k = l2_normalize(&Tensor::new(&[[1f32, 0.3], [0.2, 1.], [1., 0.6]], &dev).unwrap()).unwrap();
        let masked = info_nce_loss(&contrastive_logits(&q, &k, &k, 0.5, true).unwrap())
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        // Row 0 by hand: negatives are k1, k2.
        let mut expect = 0.0f64;
        let (qv, kv) = (q.to_vec2::<f32>().unwrap(), k.to_vec2::<f32>().unwrap());
        for (i, qi) in qv.iter().enumerate() {
            let d = |j: usize| (qi[0] * kv[j][0] + qi[1] * kv[j][1]) as f64 / 0.5;
            let z: f64 = (0..3).map(|j| d(j).exp()).sum();
            expect += z.ln() - d(i);
        }
        assert!((masked as f64 - expect / 3.0).abs() < 1e-5);
    }

    #[test]
    fn accuracy_counts_positive_wins() {
        let l = Tensor::new(&[[3f32, 1., 2.], [0., 5., 1.]], &Device::Cpu).unwrap();
        assert_eq!(contrast_acc1(&l).unwrap(), 0.5);
    }
}
