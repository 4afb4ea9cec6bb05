//! Weighted kNN classification on L2-normalised features (Wu et al. 2018, the MoCo CIFAR
//! demo's `knn_predict`): for each test feature, the k most cosine-similar training features
//! vote for their class with weight exp(sim / t); the top-voted class is the prediction.

use crate::nn::loss::l2_normalize;
use candle_core::{Result, Tensor};

/// Top-1 accuracy (%) of weighted kNN.
///
/// # Shapes
/// `train (N, D)`, `test (M, D)` (normalised here); labels `N` and `M` entries.
pub fn knn_top1(train: &Tensor, train_labels: &[u32], test: &Tensor, test_labels: &[u32], classes: usize, k: usize, t: f64) -> Result<f64> {
    let train = l2_normalize(train)?;
    let test = l2_normalize(test)?;
    let n = train.dim(0)?;
    let k = k.min(n);
    let m = test.dim(0)?;
    let mut correct = 0usize;
    let chunk = 256;
    let mut start = 0;
    while start < m {
        let len = chunk.min(m - start);
        let sims = test.narrow(0, start, len)?.matmul(&train.t()?)?.to_vec2::<f32>()?; // (len, N)
        for (row, sims) in sims.into_iter().enumerate() {
            let mut idx: Vec<usize> = (0..n).collect();
            if k < n {
                idx.select_nth_unstable_by(k - 1, |&a, &b| sims[b].total_cmp(&sims[a]));
                idx.truncate(k);
            }
            let mut votes = vec![0f64; classes.max(1)];
            for &i in &idx {
                let c = train_labels[i] as usize;
                if c < votes.len() {
                    votes[c] += (sims[i] as f64 / t).exp();
                }
            }
            let pred = votes
                .iter()
                .enumerate()
                .fold(0, |best, (c, &v)| if v > votes[best] { c } else { best });
            if pred as u32 == test_labels[start + row] {
                correct += 1;
            }
        }
        start += len;
    }
    Ok(100.0 * correct as f64 / m.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn separable_clusters_are_classified_and_weights_matter() {
        let d = Device::Cpu;
        let train = Tensor::new(&[[1f32, 0.], [0.9, 0.1], [0., 1.], [0.1, 0.9]], &d).unwrap();
        let test = Tensor::new(&[[1f32, 0.05], [0.05, 1.]], &d).unwrap();
        assert_eq!(knn_top1(&train, &[0, 0, 1, 1], &test, &[0, 1], 2, 2, 0.1).unwrap(), 100.0);
        // k = all: weights exp(sim/t) still favour the near class.
        assert_eq!(knn_top1(&train, &[0, 0, 1, 1], &test, &[0, 1], 2, 4, 0.1).unwrap(), 100.0);
        // Wrong labels → 0 %.
        assert_eq!(knn_top1(&train, &[1, 1, 0, 0], &test, &[0, 1], 2, 2, 0.1).unwrap(), 0.0);
    }
}
