//! # moco-harness
//!
//! The reference Rust harness for Momentum Contrast (He et al., CVPR 2020) on candle.
//!
//! Layers, each using only the ones below it (`../shared/tools/layers.py` checks that no
//! import goes the other way):
//!
//! 1. [`cli`]: the `moco` command: arguments, one function per command, exit codes.
//! 2. [`sweep`] (TOML grids expanded, validated, run; `runs.csv`), [`plot`] (the paper's
//!    figures from CSV files), [`hub`] (publish and pull encoders), and the tools [`bench`]
//!    (`moco bench`) and [`devcheck`] (`moco device-check`).
//! 3. [`train`]: the learner (the step of each dictionary mechanism), the epoch loop that owns
//!    a run directory, resume and `--init`.
//! 4. [`eval`]: weighted kNN and the linear protocol on frozen features.
//! 5. [`model`] (ResNet encoders with torchvision tensor names, loading them from checkpoints),
//!    [`data`] (datasets, torchvision-style augmentations, the background batch pipeline),
//!    [`nn`] (InfoNCE, SGD, the EMA, schedules).
//! 6. [`kernels`]: the CPU kernels behind the ops (convolutions, BN, InfoNCE, in-place updates).
//! 7. [`io`] (atomic files, checkpoints, run directories, CSV tables), [`config`] (the typed,
//!    validated run config), [`rng`] (every random choice, keyed by (seed, purpose, counters):
//!    [`rng::stream`]), [`device`] (the device a config asks for), [`progress`] (progress bars).
//!
//! Errors: each module has its own `thiserror` enum (or `candle_core::Result`) whose messages
//! name the file, key and value at fault; `anyhow` appears only in [`cli`].

#![warn(missing_docs)]

pub mod bench;
pub mod cli;
pub mod config;
pub mod data;
pub mod devcheck;
pub mod device;
pub mod eval;
pub mod hub;
pub mod io;
pub mod kernels;
pub mod model;
pub mod nn;
pub mod plot;
pub mod progress;
pub mod rng;
pub mod sweep;
pub mod train;
