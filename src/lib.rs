//! # moco-harness
//!
//! The reference Rust harness for Momentum Contrast (He et al., CVPR 2020) on candle.
//!
//! - [`config`]: the typed, validated run config (TOML + `--set` overrides).
//! - [`data`]: datasets in memory (built-in, ImageFolder, CIFAR binary), torchvision-style
//!   augmentations, the background batch pipeline.
//! - [`model`]: ResNet encoders with torchvision tensor names, BN with split statistics.
//! - [`train`]: InfoNCE, the queue / memory bank, the EMA, SGD, schedules, the step of each
//!   dictionary mechanism, and the epoch loop that owns a run directory.
//! - [`eval`]: weighted kNN and the linear protocol on frozen features.
//! - [`io`]: atomic files, safetensors checkpoints, run directories.
//! - [`sweep`]: TOML grids expanded, validated and run; `runs.csv`.
//! - [`plot`]: the paper's figures from CSV files.
//! - [`bench`]: the step, op and augmentation benchmarks (`moco bench`).
//! - [`devcheck`]: every op of the step on a device against the CPU path (`moco device-check`).
//! - [`hub`]: publish encoders on the Hugging Face Hub, pull them, `hf://` references.
//! - [`cli`]: the `moco` command.
//!
//! Every random choice comes from [`rng::stream`] keyed by (seed, purpose, counters).

#![warn(missing_docs)]

pub mod bench;
pub mod cli;
pub mod config;
pub mod data;
pub mod devcheck;
pub mod eval;
pub mod hub;
pub mod io;
pub mod kernels;
pub mod model;
pub mod nn;
pub mod plot;
pub mod rng;
pub mod sweep;
pub mod train;
