//! Integration tests (one binary): the golden MoCo step, configs, training runs, the CLI.

mod cli;
mod config;
#[cfg(feature = "cuda")]
mod cuda;
mod golden;
mod sweep;
mod train;
mod util;
