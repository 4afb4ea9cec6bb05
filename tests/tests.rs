//! Integration tests (one binary): the golden MoCo step, configs, training runs, the CLI.

mod cli;
mod config;
#[cfg(feature = "cuda")]
mod cuda;
mod demo;
#[cfg(feature = "hub")]
mod download;
mod eval;
mod geometry;
mod golden;
#[cfg(feature = "hub")]
mod hub;
#[cfg(feature = "hub")]
mod hub_server;
mod record;
mod shards;
mod stream;
mod sweep;
mod train;
mod util;
