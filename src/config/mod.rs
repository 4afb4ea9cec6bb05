//! The run configuration: one typed struct per concern, composed into [`RunConfig`].
//!
//! Every field has a default, so an empty TOML file is a valid run: the defaults are the
//! official MoCo CIFAR-10 demo (`facebookresearch/moco/colab/moco_cifar10_demo.ipynb`:
//! ResNet-18 CIFAR stem, MLP head, K=4096, m=0.99, τ=0.1, batch 512, lr 0.06 cosine,
//! wd 5e-4, 200 epochs, SplitBatchNorm with 8 splits) on the built-in synthetic dataset.
//! Unknown keys are rejected (`deny_unknown_fields`) and [`RunConfig::validate`] checks every
//! rule once, before anything runs.

mod overrides;
mod validate;

pub use overrides::{apply_override, apply_overrides, parse_override, Override, OverrideError};
pub use validate::{check_pretrain_split, check_train_images, effective_len, parse_device, ConfigError, DeviceRequest, ValidRunConfig};

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Everything a training run needs, as read from TOML.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Seed of every random stream of the run (weights, queue, shuffles, augmentations).
    pub seed: u64,
    /// `cpu`, `cuda`, `cuda:N` or `auto` (CUDA when built with it and a GPU is present).
    pub device: String,
    /// Dataset and input pipeline.
    pub data: DataConfig,
    /// Data augmentation (the two views).
    pub augment: AugmentConfig,
    /// Encoder architecture.
    pub model: ModelConfig,
    /// MoCo hyper-parameters (m, τ, shuffle BN).
    pub moco: MocoConfig,
    /// Which dictionary mechanism supplies the negatives.
    pub dictionary: DictionaryConfig,
    /// Optimisation.
    pub train: TrainConfig,
    /// Evaluation (kNN monitor, linear protocol).
    pub eval: EvalConfig,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            device: "cpu".into(),
            data: DataConfig::default(),
            augment: AugmentConfig::default(),
            model: ModelConfig::default(),
            moco: MocoConfig::default(),
            dictionary: DictionaryConfig::default(),
            train: TrainConfig::default(),
            eval: EvalConfig::default(),
        }
    }
}

/// Where the images come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataSource {
    /// The built-in procedural dataset (no files; seeded).
    Synthetic,
    /// `path/train/<class>/*.{jpg,png}` and `path/test/<class>/*`.
    ImageFolder,
    /// CIFAR-10 binary (`data_batch_{1..5}.bin`, `test_batch.bin`) or CIFAR-100 binary
    /// (`train.bin`, `test.bin`), found in `path`.
    CifarBin,
    /// STL-10 binary (`train_X.bin`, `train_y.bin`, `test_X.bin`, `test_y.bin`, and
    /// `unlabeled_X.bin` for `data.pretrain_split`), found in `path`; 96×96 images.
    Stl10,
    /// WebDataset tar shards and their `index.json` in `path`, made from an ImageFolder by
    /// `moco data pack --format shards`; always read per sample (shards front to back through
    /// a shuffle buffer of `shuffle_buffer` samples for training, by offset for evaluation).
    Shards,
}

impl DataSource {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Synthetic => "synthetic",
            Self::ImageFolder => "image_folder",
            Self::CifarBin => "cifar_bin",
            Self::Stl10 => "stl10",
            Self::Shards => "shards",
        }
    }
}

/// The images the self-supervised step trains on. Evaluation (kNN memory, linear classifier)
/// always uses the labelled train split and measures on the test split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PretrainSplit {
    /// The labelled training split (labels unused by the contrastive step).
    #[serde(rename = "train")]
    Train,
    /// STL-10's 100,000 unlabeled images only.
    #[serde(rename = "unlabeled")]
    Unlabeled,
    /// STL-10's labelled train split followed by its unlabeled images (105,000 images).
    #[serde(rename = "train+unlabeled")]
    TrainUnlabeled,
}

impl PretrainSplit {
    /// True for the default, `train`.
    pub fn is_train(&self) -> bool {
        *self == Self::Train
    }

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Unlabeled => "unlabeled",
            Self::TrainUnlabeled => "train+unlabeled",
        }
    }
}

/// Dataset and input pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Kind of dataset.
    pub source: DataSource,
    /// Root folder of the dataset (unused for `synthetic`).
    pub path: PathBuf,
    /// Images of the self-supervised step: `train` (any source), or with `source = "stl10"`
    /// `unlabeled` or `train+unlabeled` (the classic STL-10 pre-training split). kNN and linear
    /// evaluation always fit on the labelled train split and test on the test split.
    /// Memory: the 100,000 unlabeled images are 2.76 GB decoded (96×96×3 bytes each), held in
    /// RAM for the whole run; `train_limit` caps how many are read (the first N).
    /// Not written when `train`, so configs (and the sweep run ids hashed from them) read as
    /// before this key existed.
    #[serde(skip_serializing_if = "PretrainSplit::is_train")]
    pub pretrain_split: PretrainSplit,
    /// Side of the square network input in pixels (images are resized/cropped to it).
    pub image_size: usize,
    /// Per-channel mean for `Normalize` (CIFAR-10 values from the official MoCo CIFAR demo).
    pub mean: [f64; 3],
    /// Per-channel std for `Normalize`.
    pub std: [f64; 3],
    /// Reshuffle the training set every epoch (false keeps the dataset order).
    pub shuffle: bool,
    /// Use only the first N training images of each epoch order (0 = all), for quick runs.
    /// With an STL-10 `pretrain_split` holding `unlabeled`, also the number of unlabeled
    /// images read (the first N of `unlabeled_X.bin`).
    pub train_limit: usize,
    /// Use only the first N test images (0 = all).
    pub test_limit: usize,
    /// Batches prepared ahead of the trainer by the background pipeline.
    pub prefetch: usize,
    /// Threads of the augmentation pool (0 = one per core).
    pub workers: usize,
    /// Built-in dataset: training images.
    pub synthetic_train: usize,
    /// Built-in dataset: test images.
    pub synthetic_test: usize,
    /// Built-in dataset: number of classes (at most 10 distinct patterns).
    pub synthetic_classes: usize,
    /// How image files reach the pipeline: `memory` decodes every image once into RAM (fast
    /// epochs, RAM grows with the dataset), `stream` keeps them encoded on disk and decodes each
    /// sample when its batch is prepared (RAM bounded by prefetch × batch), `auto` (default)
    /// chooses `memory` when the decoded images fit `memory_budget_gb`, else `stream`, and says
    /// which in the log. Only ImageFolder data can stream; the binary sources are small, and
    /// shards always stream (`memory` is an error with them).
    #[serde(skip_serializing_if = "DecodeMode::is_auto")]
    pub decode: DecodeMode,
    /// Budget in GB (10⁹ bytes) for decoded images under `decode = "auto"` (default 8).
    #[serde(skip_serializing_if = "is_default_budget")]
    pub memory_budget_gb: f64,
    /// A streamed image that does not decode stops the run with an error naming the file
    /// (default). With `skip_corrupt = true` the sample is replaced by the next readable one
    /// of the epoch order, and the skipped files are counted in the log and the summary.
    #[serde(skip_serializing_if = "is_false")]
    pub skip_corrupt: bool,
    /// Decode JPEGs at 1/2, 1/4 or 1/8 size in the DCT domain when the crop is at least twice
    /// the output (libjpeg's scaled IDCT; PIL's `draft`), for streamed images. Default off:
    /// measured slower on this project's CPU (jpeg-decoder's scaled decode against the `image`
    /// crate's full decode: 174–214 vs 244–252 img/s per core at 112 px, bench/README.md) and
    /// inexact by construction; on, each view's crop is decoded at the largest reduction
    /// that keeps it at least the output size.
    #[serde(skip_serializing_if = "is_false")]
    pub dct_scaling: bool,
    /// Evaluation transform: resize the short side to `image_size / eval_crop_fraction`, then
    /// center-crop `image_size` (torchvision's ImageNet protocol is 0.875: 256 → 224). The
    /// default 1.0 resizes the short side to `image_size` (the identity on CIFAR at 32 px).
    #[serde(skip_serializing_if = "is_one")]
    pub eval_crop_fraction: f64,
    /// A file of class folder names (e.g. ImageNet WordNet ids), one per line, `#` comments:
    /// only these classes of an ImageFolder (labels follow the sorted names). ImageNet-100 is
    /// `experiments/imagenet100-classes.txt`. A listed class missing from the folder is an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class_list: Option<PathBuf>,
    /// `source = "shards"`: samples held by the training shuffle buffer (default 10,000). The
    /// shards of an epoch are read one after the other in a seeded order and each sample is
    /// taken from a random slot of the buffer, so a larger buffer mixes more shards at once.
    #[serde(skip_serializing_if = "is_default_shuffle_buffer")]
    pub shuffle_buffer: usize,
}

/// The default of `data.shuffle_buffer`.
pub const DEFAULT_SHUFFLE_BUFFER: usize = 10_000;

fn is_default_shuffle_buffer(v: &usize) -> bool {
    *v == DEFAULT_SHUFFLE_BUFFER
}

/// How image files reach the pipeline; see [`DataConfig::decode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecodeMode {
    /// `memory` when the decoded set fits the budget, else `stream`.
    #[default]
    Auto,
    /// Decode every image once, keep it in RAM.
    Memory,
    /// Keep images encoded; decode per sample.
    Stream,
}

impl DecodeMode {
    /// True for the default, `auto`.
    pub fn is_auto(&self) -> bool {
        *self == Self::Auto
    }
}

/// The default of `data.memory_budget_gb`.
pub const DEFAULT_MEMORY_BUDGET_GB: f64 = 8.0;

fn is_default_budget(v: &f64) -> bool {
    *v == DEFAULT_MEMORY_BUDGET_GB
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            source: DataSource::Synthetic,
            path: PathBuf::new(),
            pretrain_split: PretrainSplit::Train,
            image_size: 32,
            // moco_cifar10_demo.ipynb: Normalize([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010])
            mean: [0.4914, 0.4822, 0.4465],
            std: [0.2023, 0.1994, 0.2010],
            shuffle: true,
            train_limit: 0,
            test_limit: 0,
            prefetch: 4,
            workers: 0,
            synthetic_train: 2048,
            synthetic_test: 512,
            synthetic_classes: 10,
            decode: DecodeMode::Auto,
            memory_budget_gb: DEFAULT_MEMORY_BUDGET_GB,
            skip_corrupt: false,
            dct_scaling: false,
            eval_crop_fraction: 1.0,
            class_list: None,
            shuffle_buffer: DEFAULT_SHUFFLE_BUFFER,
        }
    }
}

/// Named augmentation recipes; see [`crate::data::augment::AugmentParams::resolve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AugmentPreset {
    /// MoCo v1 (`main_moco.py`, `aug_plus=False`): crop, grayscale 0.2, jitter(0.4,0.4,0.4,0.4), flip.
    V1,
    /// MoCo v2 (`aug_plus=True`): crop, jitter(0.4,0.4,0.4,0.1) p=0.8, grayscale 0.2, blur p=0.5, flip.
    V2,
    /// The official CIFAR demo: v2 without blur.
    V2Cifar,
    /// No augmentation: both views are the normalised image.
    None,
}

/// Augmentation: a preset plus optional overrides of its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// Base recipe.
    pub preset: AugmentPreset,
    /// RandomResizedCrop scale range (area fraction).
    pub crop_scale: Option<[f64; 2]>,
    /// ColorJitter strengths: brightness, contrast, saturation, hue.
    pub jitter: Option<[f64; 4]>,
    /// Probability of applying ColorJitter.
    pub jitter_p: Option<f64>,
    /// Probability of RandomGrayscale.
    pub grayscale_p: Option<f64>,
    /// Probability of GaussianBlur.
    pub blur_p: Option<f64>,
    /// GaussianBlur σ range in pixels of the network input.
    pub blur_sigma: Option<[f64; 2]>,
    /// Probability of a horizontal flip.
    pub flip_p: Option<f64>,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            preset: AugmentPreset::V2Cifar,
            crop_scale: None,
            jitter: None,
            jitter_p: None,
            grayscale_p: None,
            blur_p: None,
            blur_sigma: None,
            flip_p: None,
        }
    }
}

/// ResNet depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// BasicBlock ×[2,2,2,2].
    Resnet18,
    /// BasicBlock ×[3,4,6,3].
    Resnet34,
    /// Bottleneck ×[3,4,6,3].
    Resnet50,
}

/// First layers of the ResNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stem {
    /// 3×3 conv stride 1, no max-pool (for 32×32 inputs).
    Cifar,
    /// 7×7 conv stride 2 + 3×3 max-pool stride 2 (torchvision).
    Imagenet,
}

/// Projection head on top of the pooled backbone features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadKind {
    /// MoCo v1: `fc` = Linear(feat, dim).
    Linear,
    /// MoCo v2: `fc.0` Linear(feat, feat), ReLU, `fc.2` Linear(feat, dim).
    Mlp,
}

/// Encoder architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// ResNet depth.
    pub arch: Arch,
    /// Stem variant.
    pub stem: Stem,
    /// Channels of the first stage (64 in torchvision; smaller for CPU-scale runs).
    pub width: usize,
    /// Projection head.
    pub head: HeadKind,
    /// Output dimension of the head (`dim` in the paper; 128).
    pub feature_dim: usize,
    /// BatchNorm statistics are computed per group of `batch/bn_splits` images (the official
    /// CIFAR demo's SplitBatchNorm; emulates per-GPU BN on one device). 1 = whole batch.
    pub bn_splits: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            arch: Arch::Resnet18,
            stem: Stem::Cifar,
            width: 64,
            head: HeadKind::Mlp,
            feature_dim: 128,
            bn_splits: 8,
        }
    }
}

/// MoCo hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MocoConfig {
    /// Key-encoder EMA coefficient `m`: θk ← m·θk + (1−m)·θq.
    pub momentum: f64,
    /// Softmax temperature `τ`.
    pub temperature: f64,
    /// Shuffle the keys across BN groups before the key forward (needs `model.bn_splits > 1`
    /// to have an effect).
    pub shuffle_bn: bool,
    /// The symmetric loss of the official CIFAR demo (`moco` mode): both views serve as query
    /// and as key, `loss = loss_12 + loss_21` (a sum: the demo's lr assumes it), and both
    /// batches of keys are enqueued together after both terms (2N keys per step, so K must be
    /// a multiple of 2N).
    #[serde(skip_serializing_if = "is_false")]
    pub symmetric: bool,
    /// How `m` moves during training: `constant`, or `cosine` from `momentum` at the first
    /// step to `momentum_final` at the last (solo-learn's `base_tau` → `final_tau`).
    #[serde(skip_serializing_if = "MomentumSchedule::is_constant")]
    pub momentum_schedule: MomentumSchedule,
    /// The final `m` of the cosine schedule (solo-learn's `final_tau`).
    #[serde(skip_serializing_if = "is_one")]
    pub momentum_final: f64,
}

fn is_false(v: &bool) -> bool {
    !*v
}

fn is_one(v: &f64) -> bool {
    *v == 1.0
}

impl Default for MocoConfig {
    fn default() -> Self {
        Self {
            momentum: 0.99,
            temperature: 0.1,
            shuffle_bn: true,
            symmetric: false,
            momentum_schedule: MomentumSchedule::Constant,
            momentum_final: 1.0,
        }
    }
}

/// The key-encoder momentum schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MomentumSchedule {
    /// `m` throughout.
    Constant,
    /// `m_final − (m_final − m)·(1 + cos(π·step/steps))/2` (solo-learn's `MomentumUpdater`).
    Cosine,
}

impl MomentumSchedule {
    fn is_constant(&self) -> bool {
        *self == Self::Constant
    }
}

/// The paper's three dictionary mechanisms (Figure 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DictionaryMode {
    /// Keys of the current batch through the query encoder, by backprop (K = batch − 1 negatives).
    EndToEnd,
    /// One feature per training image; K negatives sampled each step (Wu et al. 2018).
    MemoryBank,
    /// A FIFO queue of K keys from a momentum-updated key encoder.
    Moco,
}

impl DictionaryMode {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EndToEnd => "end_to_end",
            Self::MemoryBank => "memory_bank",
            Self::Moco => "moco",
        }
    }
}

/// Dictionary mechanism.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DictionaryConfig {
    /// Mechanism.
    pub mode: DictionaryMode,
    /// `K`: negatives per query (queue length or bank samples). Ignored by `end_to_end`.
    pub size: usize,
    /// Memory bank: v ← normalize(b·v + (1−b)·q) for the positives' entries (0.5 in Wu et al.).
    pub bank_momentum: f64,
}

impl Default for DictionaryConfig {
    fn default() -> Self {
        Self {
            mode: DictionaryMode::Moco,
            size: 4096,
            bank_momentum: 0.5,
        }
    }
}

/// Learning-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// lr·0.5·(1+cos(π·e/E)) (MoCo v2).
    Cosine,
    /// lr·0.1^(milestones passed) (MoCo v1).
    Step,
    /// Constant lr.
    Constant,
}

/// Optimisation of the query encoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Epochs over the training set.
    pub epochs: usize,
    /// Stop after this many optimizer steps in total (the schedule still spans `epochs`).
    pub max_steps: Option<usize>,
    /// Images per step.
    pub batch_size: usize,
    /// Base learning rate.
    pub lr: f64,
    /// If set, lr is scaled by batch_size / lr_reference_batch (linear scaling rule).
    pub lr_reference_batch: Option<usize>,
    /// SGD momentum (PyTorch semantics).
    pub sgd_momentum: f64,
    /// L2 weight decay added to the gradient.
    pub weight_decay: f64,
    /// Schedule shape.
    pub schedule: ScheduleKind,
    /// Epochs at which the step schedule multiplies lr by 0.1.
    pub milestones: Vec<usize>,
    /// Linear warm-up length in epochs (0 = none).
    pub warmup_epochs: f64,
    /// Weights to start from (`moco train --init`): a checkpoint file or
    /// `hf://NAMESPACE/NAME[@REVISION]`. Part of the run's record, so a run resumed before its
    /// first checkpoint starts from these weights again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 200,
            max_steps: None,
            batch_size: 512,
            lr: 0.06,
            lr_reference_batch: None,
            sgd_momentum: 0.9,
            weight_decay: 5e-4,
            schedule: ScheduleKind::Cosine,
            milestones: vec![120, 160],
            warmup_epochs: 0.0,
            init: None,
        }
    }
}

/// Which features the kNN monitor uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureKind {
    /// Pooled backbone output (before the head).
    Backbone,
    /// Head output.
    Head,
}

/// Evaluation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Run the kNN monitor every N epochs (0 = only at the end).
    pub knn_every: usize,
    /// Neighbours (k=200 as in InstDisc / the MoCo CIFAR demo).
    pub knn_k: usize,
    /// Weighting temperature: w = exp(sim / t).
    pub knn_t: f64,
    /// Feature used by kNN.
    pub knn_features: FeatureKind,
    /// Training images per chunk of the kNN search (default 8192). The test features are
    /// extracted once; the training set goes through the encoder `knn_chunk` images at a time,
    /// each chunk's similarities merged into a running top-k per test image, so the memory is
    /// M×D test features + knn_chunk×D chunk features + 256×knn_chunk similarities + M×k
    /// neighbours (M test images, D feature width), whatever the size of the training set. The
    /// result does not depend on it (a resume may change it).
    #[serde(skip_serializing_if = "is_default_knn_chunk")]
    pub knn_chunk: usize,
    /// Run the linear protocol at the end of training.
    pub linear_at_end: bool,
    /// Measure the kNN top-1 of the encoder at its initialisation too (the baseline the run
    /// must beat; also `moco train --knn-at-init`).
    #[serde(skip_serializing_if = "is_false")]
    pub knn_at_init: bool,
    /// Linear protocol settings.
    pub linear: LinearConfig,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            knn_every: 0,
            knn_k: 200,
            knn_t: 0.1,
            knn_features: FeatureKind::Backbone,
            knn_chunk: DEFAULT_KNN_CHUNK,
            linear_at_end: false,
            knn_at_init: false,
            linear: LinearConfig::default(),
        }
    }
}

/// The default of `eval.knn_chunk`.
pub const DEFAULT_KNN_CHUNK: usize = 8192;

fn is_default_knn_chunk(v: &usize) -> bool {
    *v == DEFAULT_KNN_CHUNK
}

/// The linear classification protocol (`main_lincls.py`): frozen backbone, one linear layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinearConfig {
    /// Epochs (100).
    pub epochs: usize,
    /// Learning rate (30).
    pub lr: f64,
    /// SGD momentum (0.9).
    pub sgd_momentum: f64,
    /// Weight decay (0).
    pub weight_decay: f64,
    /// lr ×0.1 at these epochs (60, 80).
    pub milestones: Vec<usize>,
    /// Batch size (256).
    pub batch_size: usize,
    /// `cached`: features of the un-augmented images computed once (fast);
    /// `augmented`: RandomResizedCrop + flip each epoch through the frozen backbone (main_lincls).
    pub features: LinearFeatures,
    /// `none` (default): the classifier sees the backbone features as they are;
    /// `batch_norm`: a BatchNorm without affine parameters before it (MAE's and MoCo v3's
    /// lincls, `BatchNorm1d(D, affine=False, eps=1e-6)`): batch statistics while the classifier
    /// trains, the running mean and variance (momentum 0.1, unbiased variance) at test time.
    /// Not written when `none`, so configs (and sweep run ids) read as before this key existed.
    #[serde(skip_serializing_if = "FeatureNorm::is_none")]
    pub feature_norm: FeatureNorm,
}

/// Normalisation of the frozen features before the linear classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureNorm {
    /// The features as they are.
    #[default]
    None,
    /// BatchNorm1d without affine parameters, eps 1e-6.
    BatchNorm,
}

impl FeatureNorm {
    /// True for the default, `none`.
    pub fn is_none(&self) -> bool {
        *self == Self::None
    }
}

/// How the linear protocol gets its features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinearFeatures {
    /// Compute once, no augmentation.
    Cached,
    /// Augment each epoch (crop + flip), as `main_lincls.py`.
    Augmented,
}

impl Default for LinearConfig {
    fn default() -> Self {
        Self {
            epochs: 100,
            lr: 30.0,
            sgd_momentum: 0.9,
            weight_decay: 0.0,
            milestones: vec![60, 80],
            batch_size: 256,
            features: LinearFeatures::Cached,
            feature_norm: FeatureNorm::None,
        }
    }
}

/// Errors from reading a config file (before validation).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Bad TOML or a key/value serde rejects (unknown key, wrong type).
    #[error("{origin}: {message}")]
    Parse {
        /// File name or `--set`.
        origin: String,
        /// serde/toml message (names the key).
        message: String,
    },
    /// A `--set` override is malformed.
    #[error(transparent)]
    Override(#[from] OverrideError),
}

/// Every dotted key whose value differs between two configs: (key, value in `a`, value in
/// `b`), values as TOML; a key present in one only is shown as `(unset)` in the other.
pub fn changed_keys(a: &RunConfig, b: &RunConfig) -> Vec<(String, String, String)> {
    fn flatten(prefix: &str, t: &toml::Table, out: &mut std::collections::BTreeMap<String, String>) {
        for (k, v) in t {
            let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            match v {
                toml::Value::Table(inner) => flatten(&key, inner, out),
                other => {
                    out.insert(key, other.to_string());
                }
            }
        }
    }
    let table = |c: &RunConfig| {
        let mut out = std::collections::BTreeMap::new();
        let t: toml::Table = toml::from_str(&c.to_toml()).expect("to_toml is TOML");
        flatten("", &t, &mut out);
        out
    };
    let (ta, tb) = (table(a), table(b));
    let keys: std::collections::BTreeSet<&String> = ta.keys().chain(tb.keys()).collect();
    let unset = || "(unset)".to_string();
    keys.into_iter()
        .filter(|k| ta.get(*k) != tb.get(*k))
        .map(|k| {
            (
                k.clone(),
                ta.get(k).cloned().unwrap_or_else(unset),
                tb.get(k).cloned().unwrap_or_else(unset),
            )
        })
        .collect()
}

/// `origin`, followed by the overrides applied to it (for error messages).
pub fn with_overrides(origin: String, overrides: &[Override]) -> String {
    if overrides.is_empty() {
        return origin;
    }
    let set: Vec<String> = overrides.iter().map(|o| o.to_string()).collect();
    format!("{origin} with --set {}", set.join(" "))
}

impl RunConfig {
    /// Parse a TOML document; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, LoadError> {
        toml::from_str(text).map_err(|e| LoadError::Parse {
            origin: origin.into(),
            message: e.to_string(),
        })
    }

    /// Read a TOML file, apply `key=value` overrides, deserialize.
    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<Self, LoadError> {
        let parsed = overrides.iter().map(|o| Override::parse(o)).collect::<Result<Vec<_>, _>>()?;
        Self::load_overridden(path, &parsed)
    }

    /// Read a TOML file (or start from the defaults), apply parsed overrides, deserialize.
    pub fn load_overridden(path: Option<&Path>, overrides: &[Override]) -> Result<Self, LoadError> {
        let (mut value, origin) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| LoadError::Io {
                    path: p.to_path_buf(),
                    source,
                })?;
                let v: toml::Table = toml::from_str(&text).map_err(|e| LoadError::Parse {
                    origin: p.display().to_string(),
                    message: e.to_string(),
                })?;
                (v, p.display().to_string())
            }
            None => (toml::Table::new(), "built-in defaults".to_string()),
        };
        apply_overrides(&mut value, overrides)?;
        Self::from_table(value, &with_overrides(origin, overrides))
    }

    /// Deserialize from a TOML table.
    pub fn from_table(table: toml::Table, origin: &str) -> Result<Self, LoadError> {
        toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| LoadError::Parse {
            origin: origin.into(),
            message: e.to_string(),
        })
    }

    /// The fully resolved config as TOML (every default explicit).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("RunConfig always serializes")
    }
}
