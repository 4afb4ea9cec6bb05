//! Shared helpers: tiny configs on the built-in dataset and metric comparisons.

use moco_harness::config::{DictionaryMode, RunConfig, ValidRunConfig};
use moco_harness::io::run_dir::EpochMetrics;

/// A run that takes about a second per epoch on 2 cores: 16×16 synthetic images, ResNet-18 at
/// width 4, batch 16.
#[allow(clippy::field_reassign_with_default)]
pub fn tiny_config(mode: DictionaryMode, epochs: usize) -> RunConfig {
    let mut c = RunConfig::default();
    c.seed = 7;
    c.data.image_size = 16;
    c.data.synthetic_train = 96;
    c.data.synthetic_test = 40;
    c.data.synthetic_classes = 4;
    c.data.prefetch = 2;
    c.model.width = 4;
    c.model.feature_dim = 16;
    c.model.bn_splits = 2;
    c.dictionary.mode = mode;
    c.dictionary.size = 32;
    c.train.batch_size = 16;
    c.train.epochs = epochs;
    c.train.lr = 0.05;
    c.eval.knn_k = 10;
    c.eval.knn_every = 1;
    c
}

/// Validate or panic.
pub fn valid(c: RunConfig) -> ValidRunConfig {
    c.validate().expect("test config is valid")
}

/// The columns that must not depend on timing.
pub fn deterministic_columns(rows: &[EpochMetrics]) -> Vec<(usize, usize, u64, u64, u64, Option<u64>)> {
    rows.iter()
        .map(|r| {
            (
                r.epoch,
                r.step,
                r.lr.to_bits(),
                r.loss.to_bits(),
                r.contrast_acc1.to_bits(),
                r.knn_top1.map(f64::to_bits),
            )
        })
        .collect()
}
