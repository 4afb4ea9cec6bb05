//! The one error of a training run; each variant keeps its cause's message, which names the
//! file, key or value at fault.

use crate::config::{ConfigError, LoadError};
use crate::data::DataError;
use crate::device::DeviceError;
use crate::io::checkpoint::CheckpointError;
use crate::io::error::FileError;
use std::path::PathBuf;

/// Why a run stopped with an error (recorded as `failed` in its `summary.json`).
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The device could not be had.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The dataset could not be read.
    #[error("loading the dataset (data.*): {0}")]
    Data(DataError),
    /// A training batch could not be made (a streamed file that cannot be read or decoded).
    #[error("preparing a training batch: {0}{hint}", hint = skip_hint(.0))]
    Batch(DataError),
    /// The pre-training images could not be read.
    #[error("loading the pre-training images (data.pretrain_split): {0}")]
    Pretrain(DataError),
    /// A rule that needs the dataset's size.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The run's config.toml could not be read.
    #[error(transparent)]
    ConfigFile(#[from] LoadError),
    /// `--resume` with an override that would change what the run computes.
    #[error(
        "--resume {dir}: the run was trained with {key} = {recorded}; it cannot go on with {key} = {asked} \
         (a resumed run keeps its recorded config; only {allowed} may change). \
         To train from its weights with other settings, start a new run with --init {dir}/checkpoint.safetensors",
        allowed = super::start::RESUMABLE_KEYS.join(", ")
    )]
    ResumeChange {
        /// The run directory.
        dir: PathBuf,
        /// Dotted key.
        key: String,
        /// Its value in config.toml.
        recorded: String,
        /// The value asked for.
        asked: String,
    },
    /// A checkpoint could not be read or written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// metrics.csv / summary.json could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// A file system error outside those files.
    #[error("{path}: {source}")]
    Io {
        /// File or folder.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A tensor op failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The augmentation worker pool could not start.
    #[error("starting the augmentation workers: {0}")]
    Workers(#[from] rayon::ThreadPoolBuildError),
}

/// The key that turns a decode failure into a counted skip.
fn skip_hint(e: &DataError) -> &'static str {
    match e {
        DataError::Decode { .. } => " (to replace such files by the next sample and count them instead, set data.skip_corrupt = true)",
        _ => "",
    }
}
