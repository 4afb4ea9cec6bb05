//! `moco train`: a fresh run in a new directory, or `--resume` of a killed one.

use super::{load_config, parse_set, ExitCode, Global};
use crate::config::{Override, ValidRunConfig};
use crate::io::run_dir::{RunDir, RunStatus};
use crate::train::start::resume_config;
use crate::train::{train as train_run, TrainOptions};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// Arguments of `moco train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Run config (TOML). Without it: the built-in defaults.
    pub config: Option<PathBuf>,
    /// Override a config key, e.g. --set moco.momentum=0.999 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
    pub set: Vec<Override>,
    /// Run directory (default: results/runs/<config name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint.
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["config", "out", "init"])]
    pub resume: Option<PathBuf>,
    /// Start from these weights (and queue, if the file has one); a file or hf://NS/NAME[@REV].
    #[arg(long, value_name = "CKPT")]
    pub init: Option<PathBuf>,
    /// Also measure the kNN accuracy of the encoder at initialisation.
    #[arg(long)]
    pub knn_at_init: bool,
    /// Never draw progress bars.
    #[arg(long)]
    pub no_progress: bool,
}

/// Train (or resume) a run and print its summary.
pub fn train(a: TrainArgs, g: &Global) -> Result<ExitCode> {
    let mut set = a.set;
    // --init is a config key, so the run's record keeps it (and a resume honours it).
    // A local file is recorded by its absolute path, so a resume from elsewhere finds it.
    let init = a.init.map(|p| p.canonicalize().unwrap_or(p));
    set.extend(init.as_deref().map(|p| Override::string("train.init", &p.to_string_lossy())));
    let set = g.with_device(set);
    let resume = a.resume.is_some();
    let (cfg, dir) = match a.resume {
        Some(dir) => match resumed(&dir, &set)? {
            Some(found) => found,
            None => return Ok(ExitCode::Ok),
        },
        None => fresh(a.config, a.out, &set)?,
    };
    let init = cfg
        .train
        .init
        .as_deref()
        .map(|p| crate::hub::resolve_checkpoint(Path::new(p)))
        .transpose()?;
    let opts = TrainOptions {
        resume,
        init,
        knn_at_init: a.knn_at_init,
        progress: !a.no_progress,
    };
    eprintln!("run directory: {}", dir.root.display());
    let summary = train_run(&cfg, &dir, &opts)?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(if summary.status == RunStatus::Ok {
        ExitCode::Ok
    } else {
        ExitCode::RunNotOk
    })
}

/// The config and directory of a run to resume; `None` when it has already finished. The
/// recorded config may change only where the run computes ([`resume_config`]).
fn resumed(dir: &Path, set: &[Override]) -> Result<Option<(ValidRunConfig, RunDir)>> {
    let rd = RunDir::new(dir);
    if !rd.config().exists() {
        bail!("--resume {}: no config.toml (not a run directory)", dir.display());
    }
    let cfg = resume_config(&rd, set)?;
    if let Some(status) = rd.finished() {
        eprintln!("{}: already finished ({status:?}); nothing to do", dir.display());
        return Ok(None);
    }
    Ok(Some((cfg, rd)))
}

/// The config and a directory that holds no run yet (default: results/runs/<config name>).
fn fresh(config: Option<PathBuf>, out: Option<PathBuf>, set: &[Override]) -> Result<(ValidRunConfig, RunDir)> {
    let cfg = load_config(config.as_deref(), set)?;
    let name = config
        .as_deref()
        .and_then(|c| c.file_stem())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "default".into());
    let dir = RunDir::new(out.unwrap_or_else(|| PathBuf::from("results/runs").join(name)));
    if dir.checkpoint().exists() || dir.summary().exists() {
        bail!(
            "{} already holds a run; use --resume {} or another --out",
            dir.root.display(),
            dir.root.display()
        );
    }
    Ok((cfg, dir))
}
