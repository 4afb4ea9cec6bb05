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
