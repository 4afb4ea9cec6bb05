//! Integration tests (one binary): the golden MoCo step, configs, training runs, the CLI.

mod cli;
mod config;
mod golden;
mod sweep;
mod train;
mod util;
