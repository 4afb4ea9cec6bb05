//! Weighted kNN classification on L2-normalised features (Wu et al. 2018, the MoCo CIFAR
//! demo's `knn_predict`): for each test feature, the k most cosine-similar training features
//! vote for their class with weight exp(sim / t); the top-voted class is the prediction.
//!
//! The search runs over the training set in chunks ([`KnnSearch`]): each chunk's similarities
//! with the test features are merged into a running top-k per test feature, so the training
//! features never need to be held at once. Equal similarities go to the lower training index,
//! so the neighbours are those of the unchunked search whatever the chunk size.

use crate::nn::loss::l2_normalize;
use candle_core::{Result, Tensor};
use std::cmp::Ordering;

/// Test features per block of the similarity matrix: a block holds at most
/// `TEST_BLOCK × chunk` similarities.
pub const TEST_BLOCK: usize = 256;

/// One of a test feature's nearest training features.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbour {
    /// Cosine similarity.
    pub sim: f32,
    /// Row of the training set.
    pub index: u32,
}

/// Nearer first: higher similarity, then the lower training index.
fn nearer(a: &Neighbour, b: &Neighbour) -> Ordering {
    b.sim.total_cmp(&a.sim).then(a.index.cmp(&b.index))
}

/// A running top-k search of test features among training features given chunk by chunk.
///
/// # Memory
/// The normalised test features `M×D` stay on their device; each [`KnnSearch::add`] holds the
/// chunk's `chunk×D` features and, [`TEST_BLOCK`] test rows at a time, a `TEST_BLOCK×chunk`
/// block of similarities (on the device, then on the host for the merge); the host keeps
/// `M×k` neighbours. Nothing grows with the number of training images.
pub struct KnnSearch {
    /// Normalised test features `(M, D)`.
    test: Tensor,
    /// Neighbours kept per test feature.
    k: usize,
    /// Training rows seen so far (the index of the next chunk's first row).
    seen: usize,
    /// Per test feature, up to `k` neighbours (unordered until [`KnnSearch::finish`]).
    best: Vec<Vec<Neighbour>>,
}

impl KnnSearch {
    /// A search of the `k` nearest training features of each row of `test (M, D)`
    /// (normalised here, on its device).
    pub fn new(test: &Tensor, k: usize) -> Result<Self> {
        let m = test.dim(0)?;
        Ok(Self {
            test: l2_normalize(test)?,
            k,
            seen: 0,
            best: vec![Vec::new(); m],
        })
    }

    /// Merge the next `chunk (n, D)` training rows (normalised here); their indices follow
    /// those of the chunks before.
    pub fn add(&mut self, chunk: &Tensor) -> Result<()> {
        let n = chunk.dim(0)?;
        if n == 0 || self.k == 0 {
            self.seen += n;
            return Ok(());
        }
        let chunk_t = l2_normalize(chunk)?.t()?.contiguous()?;
        let m = self.best.len();
        for start in (0..m).step_by(TEST_BLOCK) {
            let len = TEST_BLOCK.min(m - start);
            let sims = self.test.narrow(0, start, len)?.matmul(&chunk_t)?.to_vec2::<f32>()?; // (len, n)
            for (row, sims) in sims.iter().enumerate() {
                merge(&mut self.best[start + row], sims, self.seen, self.k);
            }
        }
        self.seen += n;
        Ok(())
    }

    /// Each test feature's neighbours, nearest first (at most `k`, fewer when fewer training
    /// rows were given).
    pub fn finish(mut self) -> Vec<Vec<Neighbour>> {
        for b in &mut self.best {
            b.sort_by(nearer);
        }
        self.best
    }
}

/// Merge the similarities of training rows `offset..offset + sims.len()` into `best`, keeping
/// the `k` nearest. Rows of a later chunk have higher indices, so when `best` is full only a
/// strictly higher similarity than its farthest member can enter.
fn merge(best: &mut Vec<Neighbour>, sims: &[f32], offset: usize, k: usize) {
    let floor = (best.len() == k).then(|| best.iter().copied().max_by(nearer)).flatten();
    let enters = |s: f32| floor.is_none_or(|f| s.total_cmp(&f.sim) == Ordering::Greater);
    best.extend(sims.iter().enumerate().filter(|(_, &s)| enters(s)).map(|(j, &s)| Neighbour {
        sim: s,
        index: (offset + j) as u32,
    }));
    if best.len() > k {
        best.select_nth_unstable_by(k - 1, nearer);
        best.truncate(k);
    }
}

/// The class the `neighbours` (nearest first) vote for with weights exp(sim / t); a tie goes
/// to the lower class.
pub fn vote(neighbours: &[Neighbour], train_labels: &[u32], classes: usize, t: f64) -> usize {
    let mut votes = vec![0f64; classes.max(1)];
    for nb in neighbours {
        let c = train_labels[nb.index as usize] as usize;
        if c < votes.len() {
            votes[c] += (nb.sim as f64 / t).exp();
        }
    }
    votes
        .iter()
        .enumerate()
        .fold(0, |best, (c, &v)| if v > votes[best] { c } else { best })
}

/// Top-1 accuracy (%) of the votes of `neighbours` (one list per test feature).
pub fn top1(neighbours: &[Vec<Neighbour>], train_labels: &[u32], test_labels: &[u32], classes: usize, t: f64) -> f64 {
    let correct = neighbours
        .iter()
        .zip(test_labels)
        .filter(|(nb, &label)| vote(nb, train_labels, classes, t) as u32 == label)
        .count();
    100.0 * correct as f64 / neighbours.len().max(1) as f64
}

/// The `k` nearest training rows of each test row, the training features searched `chunk`
/// rows at a time (the same lists for every `chunk`).
///
/// # Shapes
/// `train (N, D)`, `test (M, D)` (normalised here).
pub fn knn_neighbours(train: &Tensor, test: &Tensor, k: usize, chunk: usize) -> Result<Vec<Vec<Neighbour>>> {
    let n = train.dim(0)?;
    let chunk = chunk.max(1);
    let mut search = KnnSearch::new(test, k)?;
    for start in (0..n).step_by(chunk) {
        search.add(&train.narrow(0, start, chunk.min(n - start))?)?;
    }
    Ok(search.finish())
}

/// Top-1 accuracy (%) of weighted kNN.
///
/// # Shapes
/// `train (N, D)`, `test (M, D)` (normalised here); labels `N` and `M` entries.
pub fn knn_top1(train: &Tensor, train_labels: &[u32], test: &Tensor, test_labels: &[u32], classes: usize, k: usize, t: f64) -> Result<f64> {
    let n = train.dim(0)?;
    let neighbours = knn_neighbours(train, test, k, n)?;
    Ok(top1(&neighbours, train_labels, test_labels, classes, t))
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

    /// The unchunked search as it was: every similarity at once, the k nearest by (similarity
    /// descending, index ascending).
    fn brute_force(train: &Tensor, test: &Tensor, k: usize) -> Vec<Vec<Neighbour>> {
        let sims = l2_normalize(test)
            .unwrap()
            .matmul(&l2_normalize(train).unwrap().t().unwrap())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        sims.into_iter()
            .map(|row| {
                let mut all: Vec<Neighbour> = row
                    .into_iter()
                    .enumerate()
                    .map(|(i, sim)| Neighbour { sim, index: i as u32 })
                    .collect();
                all.sort_by(nearer);
                all.truncate(k);
                all
            })
            .collect()
    }

    fn indices(lists: &[Vec<Neighbour>]) -> Vec<Vec<u32>> {
        lists.iter().map(|l| l.iter().map(|nb| nb.index).collect()).collect()
    }

    #[test]
    fn chunked_search_equals_the_unchunked_one_on_random_features() {
        let d = Device::Cpu;
        let (n, m, dim, k) = (53, 300, 12, 9);
        let train = Tensor::randn(0f32, 1., (n, dim), &d).unwrap();
        let test = Tensor::randn(0f32, 1., (m, dim), &d).unwrap();
        let labels: Vec<u32> = (0..n as u32).map(|i| i * 7 % 5).collect();
        let test_labels: Vec<u32> = (0..m as u32).map(|i| i % 5).collect();
        let want = brute_force(&train, &test, k);
        let want_top1 = top1(&want, &labels, &test_labels, 5, 0.1);
        for chunk in [1, 7, n, 4 * n] {
            let got = knn_neighbours(&train, &test, k, chunk).unwrap();
            assert_eq!(indices(&got), indices(&want), "chunk {chunk}");
            for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
                assert!((g.sim - w.sim).abs() < 1e-5, "chunk {chunk}: {g:?} vs {w:?}");
            }
            assert_eq!(top1(&got, &labels, &test_labels, 5, 0.1), want_top1, "chunk {chunk}");
        }
        assert_eq!(knn_top1(&train, &labels, &test, &test_labels, 5, k, 0.1).unwrap(), want_top1);
        // k above N keeps every training row.
        assert!(knn_neighbours(&train, &test, n + 5, 7).unwrap().iter().all(|l| l.len() == n));
    }

    #[test]
    fn equal_similarities_go_to_the_lower_training_index() {
        let d = Device::Cpu;
        // 12 training rows, 4 copies of each unit vector: exact ties (dot products with a
        // unit vector are exact whatever the chunk).
        let rows: Vec<f32> = (0..12)
            .flat_map(|i| (0..3).map(move |c| if i % 3 == c { 1. } else { 0. }))
            .collect();
        let train = Tensor::from_vec(rows, (12, 3), &d).unwrap();
        let test = Tensor::new(&[[0.2f32, 0.9, 0.1], [0.7, 0.1, 0.3]], &d).unwrap();
        for chunk in [1, 2, 5, 12] {
            let got = indices(&knn_neighbours(&train, &test, 6, chunk).unwrap());
            // Row 0 is nearest the second axis (rows 1, 4, 7, 10), then the first (0, 3, …).
            assert_eq!(got[0], vec![1, 4, 7, 10, 0, 3], "chunk {chunk}");
            assert_eq!(got[1], vec![0, 3, 6, 9, 2, 5], "chunk {chunk}");
        }
    }

    #[test]
    fn a_vote_tie_goes_to_the_lower_class() {
        let nb = [Neighbour { sim: 0.5, index: 1 }, Neighbour { sim: 0.5, index: 0 }];
        assert_eq!(vote(&nb, &[2, 1], 3, 0.1), 1);
        assert_eq!(vote(&nb, &[1, 2], 3, 0.1), 1);
        assert_eq!(vote(&nb[..1], &[1, 2], 3, 0.1), 2);
    }
}
