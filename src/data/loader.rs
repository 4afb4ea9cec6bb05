//! The input pipeline: a background thread assembles augmented batches ahead of the trainer
//! (bounded by `prefetch`), each batch augmented in parallel on a rayon pool.
//!
//! Sample at position `p` of epoch `e` draws all its random choices from
//! `rng::stream(seed, Augment, e, p)`, so batches are identical whatever the thread count,
//! and an epoch can be replayed from its start after a resume.

use super::augment::{augment_into, AugmentParams};
use super::ImageSet;
use crate::rng::{stream, Purpose};
use rand::seq::SliceRandom;
use rayon::prelude::*;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

/// One training batch on the host.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `views[v]` is view `v` of every image, `(N, 3, S, S)` row-major.
    pub views: Vec<Vec<f32>>,
    /// Class labels (unused by the contrastive step).
    pub labels: Vec<u32>,
    /// Dataset indices (the memory bank's rows).
    pub indices: Vec<u32>,
    /// Images in the batch.
    pub len: usize,
}

/// How to build batches.
#[derive(Debug, Clone)]
pub struct PipelineSpec {
    /// Augmentation.
    pub params: AugmentParams,
    /// Output side.
    pub image_size: usize,
    /// Normalisation mean.
    pub mean: [f32; 3],
    /// Normalisation std.
    pub std: [f32; 3],
    /// Views per image (2 for MoCo / end-to-end, 1 for the memory bank).
    pub views: usize,
    /// Run seed.
    pub seed: u64,
}

/// The epoch's sample order: a seeded permutation, or the dataset order.
pub fn epoch_order(n: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        order.shuffle(&mut stream(seed, Purpose::Shuffle, epoch, 0));
    }
    order
}

/// Build the batch of positions `[start, start + len)` of the epoch order.
pub fn make_batch(data: &ImageSet, order: &[usize], start: usize, len: usize, epoch: u64, spec: &PipelineSpec) -> Batch {
    let px = 3 * spec.image_size * spec.image_size;
    let mut views: Vec<Vec<f32>> = (0..spec.views).map(|_| vec![0f32; len * px]).collect();
    // Each image writes its own slot of every view.
    let mut slots: Vec<Vec<&mut [f32]>> = (0..len).map(|_| Vec::with_capacity(spec.views)).collect();
    for v in views.iter_mut() {
        for (i, chunk) in v.chunks_mut(px).enumerate() {
            slots[i].push(chunk);
        }
    }
    slots.par_iter_mut().enumerate().for_each(|(i, outs)| {
        let pos = start + i;
        let mut rng = stream(spec.seed, Purpose::Augment, epoch, pos as u64);
        let img = &data.images[order[pos]];
        for out in outs.iter_mut() {
            augment_into(img, &spec.params, spec.image_size, spec.mean, spec.std, &mut rng, out);
        }
    });
    let idx = &order[start..start + len];
    Batch {
        views,
        labels: idx.iter().map(|&i| data.labels[i]).collect(),
        indices: idx.iter().map(|&i| i as u32).collect(),
        len,
    }
}

/// A running background producer of one epoch's batches.
pub struct EpochLoader {
    rx: Receiver<Batch>,
    handle: Option<JoinHandle<()>>,
}

impl EpochLoader {
    /// Start producing batches `first_batch..n_batches` of `epoch` (drop_last semantics).
    #[allow(clippy::too_many_arguments)]
    pub fn spawn(
        data: Arc<ImageSet>,
        order: Vec<usize>,
        batch_size: usize,
        first_batch: usize,
        n_batches: usize,
        epoch: u64,
        spec: Arc<PipelineSpec>,
        prefetch: usize,
        pool: Arc<rayon::ThreadPool>,
    ) -> Self {
        let (tx, rx) = sync_channel(prefetch.max(1));
        let handle = std::thread::spawn(move || {
            for b in first_batch..n_batches {
                let batch = pool.install(|| make_batch(&data, &order, b * batch_size, batch_size, epoch, &spec));
                if tx.send(batch).is_err() {
                    return; // the trainer stopped early
                }
            }
        });
        Self { rx, handle: Some(handle) }
    }

    /// The next batch, or `None` at the end of the epoch.
    pub fn next_batch(&mut self) -> Option<Batch> {
        self.rx.recv().ok()
    }
}

impl Drop for EpochLoader {
    fn drop(&mut self) {
        // Unblock the producer, then wait so no thread outlives the loader.
        let (_, dummy) = sync_channel(0);
        drop(std::mem::replace(&mut self.rx, dummy));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Normalised, un-augmented images `(N, 3, S, S)` for evaluation.
pub fn eval_batch(data: &ImageSet, indices: &[usize], image_size: usize, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    let px = 3 * image_size * image_size;
    let mut out = vec![0f32; indices.len() * px];
    let none = AugmentParams::none();
    out.par_chunks_mut(px).zip(indices.par_iter()).for_each(|(o, &i)| {
        let mut rng = stream(0, Purpose::Augment, 0, 0); // unused by the `none` transform
        augment_into(&data.images[i], &none, image_size, mean, std, &mut rng, o);
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DataConfig;

    #[test]
    fn loader_matches_direct_batches_and_order_is_seeded() {
        let cfg = DataConfig {
            synthetic_train: 40,
            synthetic_test: 4,
            ..Default::default()
        };
        let splits = crate::data::synthetic::generate(&cfg, 3);
        let data = Arc::new(splits.train);
        let spec = Arc::new(PipelineSpec {
            params: AugmentParams::resolve(&Default::default()),
            image_size: 32,
            mean: [0.5; 3],
            std: [0.25; 3],
            views: 2,
            seed: 9,
        });
        let order = epoch_order(40, 9, 1, true);
        assert_eq!(order, epoch_order(40, 9, 1, true));
        assert_ne!(order, epoch_order(40, 9, 2, true));
        assert_eq!(epoch_order(5, 9, 1, false), vec![0, 1, 2, 3, 4]);
        let pool = Arc::new(rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap());
        let mut loader = EpochLoader::spawn(data.clone(), order.clone(), 8, 1, 5, 1, spec.clone(), 2, pool);
        let b = loader.next_batch().unwrap();
        let direct = make_batch(&data, &order, 8, 8, 1, &spec);
        assert_eq!(b.views, direct.views);
        assert_eq!(b.indices, direct.indices);
        assert_ne!(b.views[0], b.views[1], "two views differ");
        let rest: usize = std::iter::from_fn(|| loader.next_batch()).count();
        assert_eq!(rest, 3);
    }
}
