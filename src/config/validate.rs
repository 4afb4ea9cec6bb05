//! Every rule of a run, checked once before anything runs (the official code `assert`s
//! some of them mid-run). Training functions take only a [`ValidRunConfig`].

use super::{AugmentConfig, DataConfig, DataSource, DecodeMode, DictionaryMode, PretrainSplit, RunConfig};
use std::path::PathBuf;

/// A config rule that does not hold; each variant names the key and the bad value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// m ∉ [0, 1].
    #[error("moco.momentum must be in [0, 1], got {0}")]
    Momentum(f64),
    /// final m ∉ [0, 1].
    #[error("moco.momentum_final must be in [0, 1], got {0}")]
    MomentumFinal(f64),
    /// τ ≤ 0 or not finite.
    #[error("moco.temperature must be finite and > 0, got {0}")]
    Temperature(f64),
    /// K not a multiple of the batch in `moco` mode.
    #[error("dictionary.size ({size}) must be a multiple of train.batch_size ({batch}) in moco mode")]
    QueueNotMultiple {
        /// K.
        size: usize,
        /// Batch.
        batch: usize,
    },
    /// K = 0 in a mode that uses it.
    #[error("dictionary.size must be > 0 in {mode} mode, got 0")]
    ZeroSize {
        /// Mode name.
        mode: &'static str,
    },
    /// A batch larger than the training set.
    #[error("train.batch_size ({batch}) exceeds the number of training images ({images})")]
    BatchTooLarge {
        /// Batch size.
        batch: usize,
        /// Training set size.
        images: usize,
    },
    /// The symmetric loss outside `moco` mode.
    #[error("moco.symmetric = true needs dictionary.mode = \"moco\", got {0:?}")]
    SymmetricMode(&'static str),
    /// The symmetric loss enqueues 2N keys per step.
    #[error("dictionary.size ({size}) must be a multiple of 2 × train.batch_size ({twice}) with moco.symmetric = true (both views' keys are enqueued each step)")]
    SymmetricQueue {
        /// K.
        size: usize,
        /// 2N.
        twice: usize,
    },
    /// Memory bank asked for more negatives than images.
    #[error("dictionary.size ({size}) exceeds the number of training images ({images}) in memory_bank mode")]
    BankTooSmall {
        /// K.
        size: usize,
        /// Training set size.
        images: usize,
    },
    /// bank momentum ∉ [0, 1).
    #[error("dictionary.bank_momentum must be in [0, 1), got {0}")]
    BankMomentum(f64),
    /// Batch too small for a contrastive step.
    #[error("train.batch_size must be >= 2, got {0}")]
    BatchSize(usize),
    /// Batch not divisible into BN groups.
    #[error("train.batch_size ({batch}) must be a multiple of model.bn_splits ({splits}), and bn_splits >= 1")]
    BnSplits {
        /// Batch.
        batch: usize,
        /// Splits.
        splits: usize,
    },
    /// Each BN group needs at least 2 images for a batch variance.
    #[error("train.batch_size / model.bn_splits = {0} images per BN group; need at least 2")]
    BnGroupTooSmall(usize),
    /// Non-positive or non-finite number where one is required.
    #[error("{key} must be > 0, got {value}")]
    NotPositive {
        /// Key.
        key: &'static str,
        /// Value.
        value: f64,
    },
    /// A value outside [0, 1].
    #[error("{key} must be in [0, 1], got {value}")]
    NotProbability {
        /// Key.
        key: &'static str,
        /// Value.
        value: f64,
    },
    /// Negative value.
    #[error("{key} must be >= 0, got {value}")]
    Negative {
        /// Key.
        key: &'static str,
        /// Value.
        value: f64,
    },
    /// A (min, max) pair out of order or out of range.
    #[error("{key} must satisfy 0 < min <= max, got [{min}, {max}]")]
    BadRange {
        /// Key.
        key: &'static str,
        /// Lower end given.
        min: f64,
        /// Upper end given.
        max: f64,
    },
    /// Dataset folder missing.
    #[error("data.path {path:?} does not exist (data.source = {source_name})")]
    MissingDataset {
        /// Path.
        path: PathBuf,
        /// Source.
        source_name: &'static str,
    },
    /// Dataset path not given.
    #[error("data.path must be set when data.source = {0}")]
    NoDatasetPath(&'static str),
    /// An unlabeled pre-training split asked of a source that has none.
    #[error("data.pretrain_split = {split:?} needs data.source = \"stl10\" (the only source with unlabeled images), got data.source = {source_name:?}")]
    PretrainSplit {
        /// The requested split.
        split: &'static str,
        /// Source.
        source_name: &'static str,
    },
    /// The unlabeled STL-10 images a pre-training split asks for are not there.
    #[error("data.pretrain_split = {split:?} needs {path:?} (STL-10's unlabeled images), which does not exist")]
    NoUnlabeled {
        /// The requested split.
        split: &'static str,
        /// The missing file.
        path: PathBuf,
    },
    /// Synthetic dataset shape.
    #[error("data.synthetic_classes must be in 2..=10, got {0}")]
    SyntheticClasses(usize),
    /// Unparseable device string.
    #[error("device must be cpu, cuda, cuda:N or auto, got {0:?}")]
    Device(String),
    /// Input too small for the network.
    #[error("data.image_size must be >= 8, got {0}")]
    ImageSize(usize),
    /// A key that only applies to image files, set for another source.
    #[error("{key} applies to data.source = \"image_folder\" only (image files on disk), got data.source = {source_name:?}")]
    FilesOnly {
        /// Key.
        key: &'static str,
        /// Source.
        source_name: &'static str,
    },
    /// `data.decode = "memory"` with shards, which are always read per sample.
    #[error(
        "data.decode = \"memory\" does not apply to data.source = \"shards\" (shards are read per sample; use \"auto\" or \"stream\")"
    )]
    ShardsInMemory,
    /// `data.class_list` names a file that is not there.
    #[error("data.class_list {0:?} does not exist")]
    MissingClassList(PathBuf),
    /// Crop fraction of the evaluation transform outside (0, 1].
    #[error("data.eval_crop_fraction must be in (0, 1], got {0}")]
    EvalCropFraction(f64),
    /// Milestones not increasing.
    #[error("{key} must be strictly increasing, got {value:?}")]
    Milestones {
        /// Key.
        key: &'static str,
        /// Value.
        value: Vec<usize>,
    },
}

/// A config that passed [`RunConfig::validate`].
#[derive(Debug, Clone, PartialEq)]
pub struct ValidRunConfig(RunConfig);

impl std::ops::Deref for ValidRunConfig {
    type Target = RunConfig;
    fn deref(&self) -> &RunConfig {
        &self.0
    }
}

impl ValidRunConfig {
    /// The inner config.
    pub fn into_inner(self) -> RunConfig {
        self.0
    }
}

fn positive(key: &'static str, value: f64) -> Result<(), ConfigError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(ConfigError::NotPositive { key, value })
    }
}

fn probability(key: &'static str, value: Option<f64>) -> Result<(), ConfigError> {
    match value {
        Some(v) if !(0.0..=1.0).contains(&v) || v.is_nan() => Err(ConfigError::NotProbability { key, value: v }),
        _ => Ok(()),
    }
}

fn range(key: &'static str, value: Option<[f64; 2]>, upper: f64) -> Result<(), ConfigError> {
    match value {
        Some([min, max]) if !(min > 0.0 && min <= max && max <= upper) => Err(ConfigError::BadRange { key, min, max }),
        _ => Ok(()),
    }
}

fn increasing(key: &'static str, value: &[usize]) -> Result<(), ConfigError> {
    if value.windows(2).all(|w| w[0] < w[1]) {
        Ok(())
    } else {
        Err(ConfigError::Milestones {
            key,
            value: value.to_vec(),
        })
    }
}

impl RunConfig {
    /// Check every rule; the first broken one is returned.
    pub fn validate(self) -> Result<ValidRunConfig, ConfigError> {
        check_moco(&self)?;
        check_batch_and_dictionary(&self)?;
        check_numbers(&self)?;
        check_augment(&self.augment)?;
        check_data(&self)?;
        Ok(ValidRunConfig(self))
    }
}

/// The rules that need the size of the training set, known once the dataset is read (and from
/// the config alone for the built-in dataset): a batch fits in it, and so do the memory bank's
/// K negatives.
pub fn check_train_images(c: &RunConfig, images: usize) -> Result<(), ConfigError> {
    if c.dictionary.mode == DictionaryMode::MemoryBank && c.dictionary.size > images {
        return Err(ConfigError::BankTooSmall {
            size: c.dictionary.size,
            images,
        });
    }
    if c.train.batch_size > images {
        return Err(ConfigError::BatchTooLarge {
            batch: c.train.batch_size,
            images,
        });
    }
    Ok(())
}

/// Only STL-10 has unlabeled images to pre-train on.
pub fn check_pretrain_split(d: &DataConfig) -> Result<(), ConfigError> {
    if d.pretrain_split != PretrainSplit::Train && d.source != DataSource::Stl10 {
        return Err(ConfigError::PretrainSplit {
            split: d.pretrain_split.as_str(),
            source_name: d.source.as_str(),
        });
    }
    Ok(())
}

fn check_moco(c: &RunConfig) -> Result<(), ConfigError> {
    let in_unit = |m: f64| (0.0..=1.0).contains(&m);
    if !in_unit(c.moco.momentum) {
        return Err(ConfigError::Momentum(c.moco.momentum));
    }
    if !in_unit(c.moco.momentum_final) {
        return Err(ConfigError::MomentumFinal(c.moco.momentum_final));
    }
    if !(c.moco.temperature.is_finite() && c.moco.temperature > 0.0) {
        return Err(ConfigError::Temperature(c.moco.temperature));
    }
    Ok(())
}

fn check_batch_and_dictionary(c: &RunConfig) -> Result<(), ConfigError> {
    if c.moco.symmetric && c.dictionary.mode != DictionaryMode::Moco {
        return Err(ConfigError::SymmetricMode(c.dictionary.mode.as_str()));
    }
    let batch = c.train.batch_size;
    if batch < 2 {
        return Err(ConfigError::BatchSize(batch));
    }
    let splits = c.model.bn_splits;
    if splits == 0 || !batch.is_multiple_of(splits) {
        return Err(ConfigError::BnSplits { batch, splits });
    }
    if batch / splits < 2 {
        return Err(ConfigError::BnGroupTooSmall(batch / splits));
    }
    let k = c.dictionary.size;
    match c.dictionary.mode {
        DictionaryMode::Moco => {
            if k == 0 {
                return Err(ConfigError::ZeroSize { mode: "moco" });
            }
            if !k.is_multiple_of(batch) {
                return Err(ConfigError::QueueNotMultiple { size: k, batch });
            }
            if c.moco.symmetric && !k.is_multiple_of(2 * batch) {
                return Err(ConfigError::SymmetricQueue { size: k, twice: 2 * batch });
            }
        }
        DictionaryMode::MemoryBank => {
            if k == 0 {
                return Err(ConfigError::ZeroSize { mode: "memory_bank" });
            }
            let bm = c.dictionary.bank_momentum;
            if !(0.0..1.0).contains(&bm) || bm.is_nan() {
                return Err(ConfigError::BankMomentum(bm));
            }
        }
        DictionaryMode::EndToEnd => {}
    }
    if c.data.source == DataSource::Synthetic {
        check_train_images(c, effective_len(c.data.synthetic_train, c.data.train_limit))?;
    }
    Ok(())
}

fn check_numbers(c: &RunConfig) -> Result<(), ConfigError> {
    positive("train.lr", c.train.lr)?;
    positive("eval.knn_t", c.eval.knn_t)?;
    positive("eval.linear.lr", c.eval.linear.lr)?;
    for (key, v) in [
        ("train.sgd_momentum", c.train.sgd_momentum),
        ("eval.linear.sgd_momentum", c.eval.linear.sgd_momentum),
    ] {
        probability(key, Some(v))?;
    }
    for (key, v) in [
        ("train.weight_decay", c.train.weight_decay),
        ("train.warmup_epochs", c.train.warmup_epochs),
        ("eval.linear.weight_decay", c.eval.linear.weight_decay),
    ] {
        if !(v.is_finite() && v >= 0.0) {
            return Err(ConfigError::Negative { key, value: v });
        }
    }
    for (key, v) in [
        ("train.epochs", c.train.epochs),
        ("model.width", c.model.width),
        ("model.feature_dim", c.model.feature_dim),
        ("eval.knn_k", c.eval.knn_k),
        ("eval.knn_chunk", c.eval.knn_chunk),
        ("eval.linear.epochs", c.eval.linear.epochs),
        ("eval.linear.batch_size", c.eval.linear.batch_size),
        ("data.prefetch", c.data.prefetch),
    ] {
        if v == 0 {
            return Err(ConfigError::NotPositive { key, value: 0.0 });
        }
    }
    if c.train.max_steps == Some(0) {
        return Err(ConfigError::NotPositive {
            key: "train.max_steps",
            value: 0.0,
        });
    }
    if c.train.lr_reference_batch == Some(0) {
        return Err(ConfigError::NotPositive {
            key: "train.lr_reference_batch",
            value: 0.0,
        });
    }
    increasing("train.milestones", &c.train.milestones)?;
    increasing("eval.linear.milestones", &c.eval.linear.milestones)?;
    for (i, s) in c.data.std.iter().enumerate() {
        positive(["data.std[0]", "data.std[1]", "data.std[2]"][i], *s)?;
    }
    if c.data.image_size < 8 {
        return Err(ConfigError::ImageSize(c.data.image_size));
    }
    Ok(())
}

fn check_augment(a: &AugmentConfig) -> Result<(), ConfigError> {
    range("augment.crop_scale", a.crop_scale, 1.0)?;
    range("augment.blur_sigma", a.blur_sigma, f64::INFINITY)?;
    for (key, v) in [
        ("augment.jitter_p", a.jitter_p),
        ("augment.grayscale_p", a.grayscale_p),
        ("augment.blur_p", a.blur_p),
        ("augment.flip_p", a.flip_p),
    ] {
        probability(key, v)?;
    }
    if let Some(j) = a.jitter {
        for (i, v) in j.iter().enumerate() {
            let key = ["augment.jitter[0]", "augment.jitter[1]", "augment.jitter[2]", "augment.jitter[3]"][i];
            if !(v.is_finite() && *v >= 0.0) || (i == 3 && *v > 0.5) {
                return Err(ConfigError::NotProbability { key, value: *v });
            }
        }
    }
    Ok(())
}

fn check_data(c: &RunConfig) -> Result<(), ConfigError> {
    parse_device(&c.device)?;
    check_pretrain_split(&c.data)?;
    check_files_keys(&c.data)?;
    match c.data.source {
        DataSource::Synthetic => {
            if !(2..=10).contains(&c.data.synthetic_classes) {
                return Err(ConfigError::SyntheticClasses(c.data.synthetic_classes));
            }
            if c.data.synthetic_train == 0 || c.data.synthetic_test == 0 {
                return Err(ConfigError::NotPositive {
                    key: "data.synthetic_train",
                    value: 0.0,
                });
            }
        }
        src => {
            let name = src.as_str();
            if c.data.path.as_os_str().is_empty() {
                return Err(ConfigError::NoDatasetPath(name));
            }
            if !c.data.path.exists() {
                return Err(ConfigError::MissingDataset {
                    path: c.data.path.clone(),
                    source_name: name,
                });
            }
            let unlabeled = c.data.path.join("unlabeled_X.bin");
            if c.data.pretrain_split != PretrainSplit::Train && !unlabeled.exists() {
                return Err(ConfigError::NoUnlabeled {
                    split: c.data.pretrain_split.as_str(),
                    path: unlabeled,
                });
            }
        }
    }
    Ok(())
}

/// The keys of image files on disk (decode mode, class list, budget, crop fraction).
fn check_files_keys(d: &DataConfig) -> Result<(), ConfigError> {
    let files_only = |key| ConfigError::FilesOnly {
        key,
        source_name: d.source.as_str(),
    };
    let files = d.source == DataSource::ImageFolder;
    let shards = d.source == DataSource::Shards;
    if d.decode == DecodeMode::Stream && !files && !shards {
        return Err(files_only("data.decode = \"stream\""));
    }
    if d.decode == DecodeMode::Memory && shards {
        return Err(ConfigError::ShardsInMemory);
    }
    if d.shuffle_buffer == 0 {
        return Err(ConfigError::NotPositive {
            key: "data.shuffle_buffer",
            value: 0.0,
        });
    }
    if let Some(list) = &d.class_list {
        if !files && !shards {
            return Err(files_only("data.class_list"));
        }
        if !list.is_file() {
            return Err(ConfigError::MissingClassList(list.clone()));
        }
    }
    if !(d.memory_budget_gb.is_finite() && d.memory_budget_gb > 0.0) {
        return Err(ConfigError::NotPositive {
            key: "data.memory_budget_gb",
            value: d.memory_budget_gb,
        });
    }
    if !(d.eval_crop_fraction > 0.0 && d.eval_crop_fraction <= 1.0) {
        return Err(ConfigError::EvalCropFraction(d.eval_crop_fraction));
    }
    Ok(())
}

/// Number of images used from a set of `n` with limit `limit` (0 = all).
pub fn effective_len(n: usize, limit: usize) -> usize {
    if limit == 0 {
        n
    } else {
        n.min(limit)
    }
}

/// Parsed device request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRequest {
    /// CPU.
    Cpu,
    /// CUDA ordinal.
    Cuda(usize),
    /// CUDA if available, else CPU.
    Auto,
}

/// Parse `cpu`, `cuda`, `cuda:N`, `auto`.
pub fn parse_device(s: &str) -> Result<DeviceRequest, ConfigError> {
    match s {
        "cpu" => Ok(DeviceRequest::Cpu),
        "auto" => Ok(DeviceRequest::Auto),
        "cuda" => Ok(DeviceRequest::Cuda(0)),
        _ => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(DeviceRequest::Cuda)
            .ok_or_else(|| ConfigError::Device(s.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretrain_split_needs_stl10_and_its_unlabeled_file() {
        let dir = tempfile::tempdir().unwrap();
        let table = |split: &str, source: &str| {
            let text = format!("[data]\nsource = {source:?}\npath = {:?}\npretrain_split = {split:?}\n", dir.path());
            RunConfig::from_toml_str(&text, "test")
        };
        let e = table("unlabeled", "cifar_bin").unwrap().validate().unwrap_err();
        assert_eq!(
            e.to_string(),
            "data.pretrain_split = \"unlabeled\" needs data.source = \"stl10\" (the only source with unlabeled images), got data.source = \"cifar_bin\""
        );
        let e = table("train+unlabeled", "stl10").unwrap().validate().unwrap_err().to_string();
        assert!(
            e.starts_with("data.pretrain_split = \"train+unlabeled\" needs ") && e.contains("unlabeled_X.bin"),
            "{e}"
        );
        std::fs::write(dir.path().join("unlabeled_X.bin"), b"").unwrap();
        assert!(table("train+unlabeled", "stl10").unwrap().validate().is_ok());
        assert!(table("train", "stl10").unwrap().validate().is_ok());
        assert!(table("train", "cifar_bin").unwrap().validate().is_ok());
        // The default is not written: resolved configs and sweep run ids are as before.
        let mut c = RunConfig::default();
        assert!(!c.to_toml().contains("pretrain_split"));
        c.data.pretrain_split = PretrainSplit::TrainUnlabeled;
        assert!(c.to_toml().contains("pretrain_split = \"train+unlabeled\""));
        assert_eq!(RunConfig::from_toml_str(&c.to_toml(), "resolved").unwrap(), c);
        // A value serde does not know names the key's values.
        let e = table("unlabelled", "stl10").unwrap_err().to_string();
        assert!(e.contains("unlabelled") && e.contains("train+unlabeled"), "{e}");
    }
}
