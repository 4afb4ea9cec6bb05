//! The `moco` command line. Each command is one function in its own file, which parses
//! nothing and decides nothing that the library decides; this file holds the argument types,
//! the dispatch, and the exit codes (decided here and nowhere else):
//!
//! - [`train`]: `moco train` (fresh, `--init`, `--resume`).
//! - [`eval`]: `moco eval knn|linear`, `moco embed`.
//! - [`sweep`]: `moco sweep`, `moco plot`.
//! - [`hub`]: `moco push`, `moco pull`, `moco sweep --push`.
//! - [`data`]: `moco data pack|download`.
//! - [`tools`]: `moco bench`, `moco device-check`, `moco config`.

pub mod data;
pub mod eval;
pub mod hub;
pub mod sweep;
pub mod tools;
pub mod train;

use crate::config::{Override, OverrideError, RunConfig, ValidRunConfig};
use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::Path;

pub use data::DataCommand;
pub use eval::{EmbedArgs, EvalArgs};
pub use hub::{PullArgs, PushArgs};
pub use sweep::{PlotArgs, SweepArgs};
pub use tools::{BenchCommand, ConfigArgs};
pub use train::TrainArgs;

/// Momentum Contrast (MoCo) on candle: train, evaluate, export.
#[derive(Debug, Parser)]
#[command(name = "moco", version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("MOCO_BUILD_COMMIT"), ")"), about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Where tensors live: cpu, cuda, cuda:N or auto (CUDA when built with `--features cuda` and
    /// a GPU is there). Overrides the config's `device` (same as --set device=…).
    #[arg(long, global = true, value_name = "DEVICE")]
    pub device: Option<String>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a run (or resume one).
    Train(TrainArgs),
    /// Evaluate the query encoder of a run directory or checkpoint.
    Eval(EvalArgs),
    /// Write backbone (or head) features and labels of a dataset split to safetensors.
    Embed(EmbedArgs),
    /// Run a sweep (TOML grid of configs): plan, run, resume, runs.csv, plots.
    Sweep(SweepArgs),
    /// Publish a run's query encoder to the Hugging Face Hub in one commit: model.safetensors
    /// (torchvision names, loadable in PyTorch), config.json, README.md (model card with the
    /// run's kNN/linear top-1), metrics.csv. Token: HF_TOKEN or `hf auth login`'s file.
    Push(PushArgs),
    /// Download a model repo (every file) into the Hub cache and print where it is.
    Pull(PullArgs),
    /// Redraw a sweep's figures from its CSV files.
    Plot(PlotArgs),
    /// Benchmarks: the training step (speed, peak memory, per-op breakdown), the augmentation
    /// pipeline, and the ratio to PyTorch's numbers (bench/README.md).
    Bench {
        /// What to measure.
        #[command(subcommand)]
        what: BenchCommand,
    },
    /// Datasets: download the official archives (checksummed), pack a class-balanced subset
    /// as CIFAR-10 binary (small enough to carry), or pack an ImageFolder as tar shards.
    Data {
        /// What to do.
        #[command(subcommand)]
        what: DataCommand,
    },
    /// Check every op of the training step on --device against the CPU path (relative error
    /// < 1e-4 in f32); on CPU, candle's ops (the CUDA path) against the CPU kernels. Exit 1 on
    /// any failure.
    DeviceCheck,
    /// Print the fully resolved, validated config.
    Config(ConfigArgs),
}

/// The process's exit status: 0 when everything asked for was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExitCode {
    /// Done.
    Ok = 0,
    /// An error (also what `main` returns for any `Err`), or a failed device check.
    Error = 1,
    /// `moco train`: the run ended but not `ok` (diverged).
    RunNotOk = 3,
    /// `moco sweep`: at least one run failed (the others ran; runs.csv says which).
    SweepRunFailed = 4,
    /// `moco sweep --push`: at least one finished run could not be published.
    PushFailed = 5,
}

/// Options every command shares.
#[derive(Debug, Clone, Default)]
pub struct Global {
    /// `--device`, already checked.
    pub device: Option<String>,
}

impl Global {
    /// `set` with `--device` appended, last so that it wins.
    pub fn with_device(&self, mut set: Vec<Override>) -> Vec<Override> {
        set.extend(self.device.as_deref().map(|d| Override::string("device", d)));
        set
    }
}

/// Run a parsed command; returns the process exit code.
pub fn run(cli: Cli) -> Result<i32> {
    if let Some(d) = &cli.device {
        crate::config::parse_device(d).with_context(|| format!("--device {d}"))?;
    }
    let g = Global { device: cli.device };
    let code = match cli.command {
        Command::Train(a) => train::train(a, &g)?,
        Command::Eval(a) => eval::eval(a, &g)?,
        Command::Embed(a) => eval::embed(a, &g)?,
        Command::Sweep(a) => sweep::sweep(a, &g)?,
        Command::Push(a) => hub::push(a)?,
        Command::Pull(a) => hub::pull(a)?,
        Command::Plot(a) => sweep::plot(a)?,
        Command::Bench { what } => tools::bench(what, &g)?,
        Command::Data { what } => data::data(what)?,
        Command::DeviceCheck => tools::device_check(&g)?,
        Command::Config(a) => tools::config(a)?,
    };
    Ok(code as i32)
}

/// `--set` values are parsed once, by clap.
fn parse_set(arg: &str) -> Result<Override, OverrideError> {
    Override::parse(arg)
}

/// Load and validate a config with overrides; errors name the file (or the defaults).
pub fn load_config(path: Option<&Path>, set: &[Override]) -> Result<ValidRunConfig> {
    let cfg = RunConfig::load_overridden(path, set)?;
    let origin = path.map(|p| p.display().to_string()).unwrap_or_else(|| "built-in defaults".into());
    cfg.validate().with_context(|| format!("invalid config ({origin})"))
}

/// Evaluation protocol.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Protocol {
    /// Weighted kNN (k, t from eval.*).
    Knn,
    /// Linear classification on the frozen backbone.
    Linear,
}

/// Dataset split.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq)]
pub enum Split {
    /// Training split.
    Train,
    /// Test split.
    Test,
}

/// Feature kind for `embed`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Features {
    /// Pooled backbone.
    Backbone,
    /// Head output.
    Head,
}
