//! `moco sweep` (plan, run, resume, collect, push) and `moco plot`.

use super::{ExitCode, Global};
use crate::sweep::results::write_readme;
use crate::sweep::runner::{run_sweep, sweep_dir, write_runs_csv, SweepOptions, SweepOutcome};
use crate::sweep::Sweep;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// Arguments of `moco sweep`.
#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// Sweep file (e.g. experiments/momentum-cpu.toml).
    pub file: PathBuf,
    /// Print the plan and stop: every run with its optimizer steps (epochs × training images /
    /// batch, capped by train.max_steps; `?` when the training set is not there to count).
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: the training throughput to assume (images/s, as runs.csv's images_per_s),
    /// to print the hours of each run and of the sweep.
    #[arg(long, value_name = "N", requires = "dry_run", value_parser = positive_rate)]
    pub img_per_s: Option<f64>,
    /// Run only every n-th point: `i/n` (0-based i), for n machines sharing a sweep.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Only rebuild runs.csv, plots and README from the run directories.
    #[arg(long)]
    pub collect: bool,
    /// Root of the results tree.
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
    /// Measure kNN at initialisation for every run.
    #[arg(long)]
    pub knn_at_init: bool,
    /// Never draw progress bars.
    #[arg(long)]
    pub no_progress: bool,
    /// Publish every finished run to the Hub as NAMESPACE/PREFIX-<run id> (see `moco push`).
    #[arg(long, value_name = "NAMESPACE/PREFIX")]
    pub push: Option<String>,
}

/// Arguments of `moco plot`.
#[derive(Debug, clap::Args)]
pub struct PlotArgs {
    /// results/<sweep> folder (holding runs.csv).
    pub dir: PathBuf,
}

/// Run (this shard of) a sweep, then rewrite runs.csv, the README and the figures.
pub fn sweep(a: SweepArgs, g: &Global) -> Result<ExitCode> {
    let sweep = Sweep::load(&a.file)?;
    if let Some(p) = &a.push {
        if !crate::hub::ENABLED {
            return Err(crate::hub::disabled("--push").into());
        }
        crate::hub::HubRef::parse(p, true).with_context(|| format!("--push {p}"))?;
    }
    let shard = a.shard.as_deref().map(parse_shard).transpose()?;
    if a.dry_run {
        let plan = sweep.plan_with_estimates(a.img_per_s);
        eprint!("sweep {} ({} runs):\n{plan}", sweep.name, sweep.points.len());
        return Ok(ExitCode::Ok);
    }
    eprint!("sweep {} ({} runs):\n{}", sweep.name, sweep.points.len(), sweep.plan());
    let dir = sweep_dir(&sweep, &a.results);
    let outcome = if a.collect {
        write_runs_csv(&sweep, &a.results)?;
        SweepOutcome::default()
    } else {
        let opts = SweepOptions {
            shard,
            results_root: a.results.clone(),
            progress: !a.no_progress,
            knn_at_init: a.knn_at_init,
            device: g.device.clone(),
        };
        run_sweep(&sweep, &opts)?
    };
    let (_, rows) = crate::io::table::read_csv(&dir.join("runs.csv"))?;
    let command = format!("moco sweep {}", a.file.display());
    write_readme(&dir, &sweep.name, &sweep.keys, &rows, &command)?;
    for f in crate::plot::plot_sweep(&dir)? {
        eprintln!("wrote {}", f.display());
    }
    report(&dir, &outcome);
    let mut code = if outcome.failed.is_empty() {
        ExitCode::Ok
    } else {
        ExitCode::SweepRunFailed
    };
    if let Some(prefix) = &a.push {
        code = code.max(super::hub::push_sweep(&dir, &rows, prefix)?);
    }
    Ok(code)
}

fn report(dir: &std::path::Path, outcome: &SweepOutcome) {
    eprintln!(
        "{}: {} ran, {} skipped, {} diverged, {} failed",
        dir.join("runs.csv").display(),
        outcome.ran,
        outcome.skipped,
        outcome.diverged,
        outcome.failed.len()
    );
    for f in &outcome.failed {
        eprintln!("  failed: {f}");
    }
}

/// `moco plot`: redraw a sweep's figures from its CSV files.
pub fn plot(a: PlotArgs) -> Result<ExitCode> {
    let files = crate::plot::plot_sweep(&a.dir)?;
    if files.is_empty() {
        bail!(
            "{}: nothing to plot (runs.csv has no finished runs with figures to draw)",
            a.dir.join("runs.csv").display()
        );
    }
    for f in files {
        println!("wrote {}", f.display());
    }
    Ok(ExitCode::Ok)
}

/// `--img-per-s`: a finite number > 0.
fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("expected a number of images per second > 0, got {s:?}")),
    }
}

/// Parse `i/n` with `i < n`.
fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let parsed = s
        .split_once('/')
        .and_then(|(i, n)| Some((i.parse::<usize>().ok()?, n.parse::<usize>().ok()?)));
    match parsed {
        Some((i, n)) if n > 0 && i < n => Ok((i, n)),
        _ => bail!("--shard {s:?}: expected I/N with 0 <= I < N"),
    }
}
