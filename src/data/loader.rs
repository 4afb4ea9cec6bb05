//! The input pipeline: a background thread assembles augmented batches ahead of the trainer
//! (bounded by `prefetch`), each batch augmented in parallel on a rayon pool. For a streamed
//! set the workers also read and decode the files, so memory holds `prefetch` batches, not
//! the dataset.
//!
//! Sample at position `p` of epoch `e` draws all its random choices from
//! `rng::stream(seed, Augment, e, p)`, so batches are identical whatever the thread count,
//! and an epoch can be replayed from its start after a resume.

use super::augment::AugmentParams;
use super::sample::{augment_views, eval_view_or_next, Output, MAX_SKIPS};
use super::{DataError, ImageSet};
use crate::config::DataConfig;
use crate::rng::{stream, Purpose};
use rand::seq::SliceRandom;
use rayon::prelude::*;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
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
    /// Output size, normalisation, decoding.
    pub output: Output,
    /// Views per image (2 for MoCo / end-to-end, 1 for the memory bank).
    pub views: usize,
    /// Run seed.
    pub seed: u64,
    /// The files skipped so far under `output.skip_corrupt` (one entry per replacement by the
    /// next sample of the epoch order).
    pub skipped: Arc<Mutex<Vec<PathBuf>>>,
}

impl PipelineSpec {
    /// A spec with an empty list of skipped files.
    pub fn new(params: AugmentParams, output: Output, views: usize, seed: u64) -> Self {
        Self {
            params,
            output,
            views,
            seed,
            skipped: Arc::default(),
        }
    }

    /// Files skipped so far.
    pub fn skipped_files(&self) -> Vec<PathBuf> {
        self.skipped.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// Loader threads for `data.workers` (0 = one per available core).
pub fn worker_count(workers: usize) -> usize {
    match workers {
        0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        w => w,
    }
}

/// The epoch's sample order: a seeded permutation, or the dataset order.
pub fn epoch_order(n: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        order.shuffle(&mut stream(seed, Purpose::Shuffle, epoch, 0));
    }
    order
}

/// The training order of `set` for `epoch`: for a pack of shards, the shards in a seeded order
/// read through the shuffle buffer of `data.shuffle_buffer` samples
/// ([`shard_epoch_order`](super::shards::order::shard_epoch_order), loader rank 0 of 1);
/// for every other set, the seeded permutation of [`epoch_order`].
pub fn train_order(set: &ImageSet, data: &DataConfig, seed: u64, epoch: u64) -> Vec<usize> {
    if set.members.is_empty() {
        return epoch_order(set.len(), seed, epoch, data.shuffle);
    }
    super::shards::order::shard_epoch_order(set, data.shuffle_buffer, seed, epoch, data.shuffle, 0, 1)
}

/// Build the batch of positions `[start, start + len)` of the epoch order.
pub fn make_batch(data: &ImageSet, order: &[usize], start: usize, len: usize, epoch: u64, spec: &PipelineSpec) -> Result<Batch, DataError> {
    let px = 3 * spec.output.image_size * spec.output.image_size;
    let mut views: Vec<Vec<f32>> = (0..spec.views).map(|_| vec![0f32; len * px]).collect();
    // Each image writes its own slot of every view.
    let mut slots: Vec<Vec<&mut [f32]>> = (0..len).map(|_| Vec::with_capacity(spec.views)).collect();
    for v in views.iter_mut() {
        for (i, chunk) in v.chunks_mut(px).enumerate() {
            slots[i].push(chunk);
        }
    }
    let idx = slots
        .par_iter_mut()
        .enumerate()
        .map(|(i, outs)| fill_views(data, order, start + i, epoch, spec, outs))
        .collect::<Result<Vec<usize>, DataError>>()?;
    Ok(Batch {
        views,
        labels: idx.iter().map(|&i| data.labels[i]).collect(),
        indices: idx.iter().map(|&i| i as u32).collect(),
        len,
    })
}

/// The views of the sample at position `pos`; returns the dataset index they show (under
/// `skip_corrupt`, a file that does not decode gives way to the next one of the order, with
/// the same random draws).
fn fill_views(
    data: &ImageSet,
    order: &[usize],
    pos: usize,
    epoch: u64,
    spec: &PipelineSpec,
    outs: &mut [&mut [f32]],
) -> Result<usize, DataError> {
    let mut tries = 0;
    loop {
        let i = order[(pos + tries) % order.len()];
        let mut rng = stream(spec.seed, Purpose::Augment, epoch, pos as u64);
        match augment_views(data, i, &spec.params, &spec.output, &mut rng, outs) {
            Ok(()) => return Ok(i),
            Err(DataError::Decode { path, .. }) if spec.output.skip_corrupt && tries + 1 < MAX_SKIPS => {
                if let Ok(mut v) = spec.skipped.lock() {
                    v.push(path);
                }
                tries += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A running background producer of one epoch's batches.
pub struct EpochLoader {
    rx: Receiver<Result<Batch, DataError>>,
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
                let failed = batch.is_err();
                if tx.send(batch).is_err() || failed {
                    return; // the trainer stopped early, or this epoch cannot go on
                }
            }
        });
        Self { rx, handle: Some(handle) }
    }

    /// The next batch, or `None` at the end of the epoch; an error (a file that cannot be read
    /// or decoded) ends the epoch.
    pub fn next_batch(&mut self) -> Option<Result<Batch, DataError>> {
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

/// The evaluation view `(N, 3, S, S)` of images `indices`, normalised.
pub fn eval_batch(data: &ImageSet, indices: &[usize], output: &Output) -> Result<Vec<f32>, DataError> {
    let px = 3 * output.image_size * output.image_size;
    let mut out = vec![0f32; indices.len() * px];
    out.par_chunks_mut(px)
        .zip(indices.par_iter())
        .try_for_each(|(o, &i)| eval_view_or_next(data, i, output, o))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_output(size: usize) -> Output {
        Output {
            image_size: size,
            mean: [0.5; 3],
            std: [0.25; 3],
            dct: false,
            eval_crop_fraction: 1.0,
            skip_corrupt: false,
        }
    }

    #[test]
    fn loader_matches_direct_batches_and_order_is_seeded() {
        let cfg = DataConfig {
            synthetic_train: 40,
            synthetic_test: 4,
            ..Default::default()
        };
        let splits = crate::data::synthetic::generate(&cfg, 3);
        let data = Arc::new(splits.train);
        let spec = Arc::new(PipelineSpec::new(
            AugmentParams::resolve(&Default::default()),
            test_output(32),
            2,
            9,
        ));
        let order = epoch_order(40, 9, 1, true);
        assert_eq!(order, epoch_order(40, 9, 1, true));
        assert_ne!(order, epoch_order(40, 9, 2, true));
        assert_eq!(epoch_order(5, 9, 1, false), vec![0, 1, 2, 3, 4]);
        let pool = Arc::new(rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap());
        let mut loader = EpochLoader::spawn(data.clone(), order.clone(), 8, 1, 5, 1, spec.clone(), 2, pool);
        let b = loader.next_batch().unwrap().unwrap();
        let direct = make_batch(&data, &order, 8, 8, 1, &spec).unwrap();
        assert_eq!(b.views, direct.views);
        assert_eq!(b.indices, direct.indices);
        assert_ne!(b.views[0], b.views[1], "two views differ");
        let rest: usize = std::iter::from_fn(|| loader.next_batch()).count();
        assert_eq!(rest, 3);
    }
}
