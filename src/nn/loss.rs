//! InfoNCE (the paper's Eq. 1) as a pure function over logits with the positive at index 0.

use candle_core::{DType, Result, Tensor, D};

/// `x / max(‖x‖₂, 1e-12)` along dim 1, as `torch.nn.functional.normalize`.
///
/// # Shapes
/// `(N, C)` → `(N, C)`
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(1e-12)?;
    x.broadcast_div(&norm)
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

/// InfoNCE of queries against one positive and K negatives (as [`contrastive_logits`] then
/// [`info_nce_loss`]), and the fraction of rows whose positive wins ([`contrast_acc1`]). On CPU
/// the logits are never materialised ([`crate::kernels::infonce`]); elsewhere the composed ops.
pub fn info_nce(q: &Tensor, k_pos: &Tensor, negatives: &Tensor, temperature: f64, mask_diagonal: bool) -> Result<(Tensor, f32)> {
    if crate::kernels::use_cpu_kernels(q.device()) {
        let l_pos = (q * k_pos)?.sum_keepdim(1)?; // (N, 1)
        let l_neg = if negatives.track_op() {
            q.matmul(&negatives.t()?)? // end-to-end: the negatives are keys with gradients
        } else {
            crate::kernels::infonce::neg_logits(q, negatives)? // queue / bank: grad for q only
        }; // (N, K)
        crate::kernels::infonce::info_nce(&l_pos, &l_neg, temperature, mask_diagonal)
    } else {
        let logits = contrastive_logits(q, k_pos, negatives, temperature, mask_diagonal)?;
        Ok((info_nce_loss(&logits)?, contrast_acc1(&logits)?))
    }
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

/// Cross-entropy of `logits (N, classes)` against `labels (N,)` u32, averaged.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    candle_nn::loss::cross_entropy(logits, labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

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
