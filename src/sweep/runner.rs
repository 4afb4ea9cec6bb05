//! Runs the points of a sweep one after another: finished runs are skipped, a killed run
//! resumes from its checkpoint, a failed or diverged run is recorded and the sweep goes on.
//! `--shard i/n` takes every n-th point so n machines can share one sweep; every machine
//! writes only its own run directories, and `runs.csv` is rebuilt from all of them.

use super::results::{collect, header};
use super::{Sweep, SweepError};
use crate::io::atomic::write_atomic;
use crate::io::run_dir::{RunDir, RunStatus};
use crate::io::table::write_csv;
use crate::train::{train, TrainOptions};
use std::path::{Path, PathBuf};

/// How to run a sweep.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// `Some((i, n))`: run the points with `index % n == i`.
    pub shard: Option<(usize, usize)>,
    /// Where `results/<sweep>/` goes.
    pub results_root: PathBuf,
    /// Progress bars.
    pub progress: bool,
    /// Also measure kNN at initialisation for each run.
    pub knn_at_init: bool,
    /// Run every point on this device (`--device`); the run ids stay those of the sweep file,
    /// so one sweep can be shared by CPU and GPU machines.
    pub device: Option<String>,
}

/// What happened.
#[derive(Debug, Clone, Default)]
pub struct SweepOutcome {
    /// Runs trained (fresh or resumed) to the end.
    pub ran: usize,
    /// Runs already finished.
    pub skipped: usize,
    /// Runs that diverged (recorded, not an error).
    pub diverged: usize,
    /// `run_id: message` of the runs that failed.
    pub failed: Vec<String>,
}

/// The sweep's results folder.
pub fn sweep_dir(sweep: &Sweep, root: &Path) -> PathBuf {
    root.join(&sweep.name)
}

/// Run (this shard of) the sweep, then rewrite `runs.csv`.
pub fn run_sweep(sweep: &Sweep, opts: &SweepOptions) -> Result<SweepOutcome, SweepError> {
    let dir = sweep_dir(sweep, &opts.results_root);
    std::fs::create_dir_all(&dir).map_err(|source| SweepError::Io { path: dir.clone(), source })?;
    let plan = dir.join("plan.txt");
    write_atomic(&plan, sweep.plan().as_bytes()).map_err(|source| SweepError::Io { path: plan, source })?;
    let mut out = SweepOutcome::default();
    let mine: Vec<_> = sweep
        .points
        .iter()
        .filter(|p| opts.shard.is_none_or(|(i, n)| p.index % n == i))
        .collect();
    for (k, p) in mine.iter().enumerate() {
        let rd = RunDir::new(dir.join(&p.run_id));
        if let Some(status) = rd.finished() {
            eprintln!("[{}/{}] #{} {}: already {status:?}, skipped", k + 1, mine.len(), p.index, p.label());
            out.skipped += 1;
            continue;
        }
        let resume = rd.checkpoint().exists();
        eprintln!(
            "[{}/{}] #{} {}{}  → {}",
            k + 1,
            mine.len(),
            p.index,
            p.label(),
            if resume { " (resuming)" } else { "" },
            rd.root.display()
        );
        let topts = TrainOptions {
            resume,
            init: None,
            knn_at_init: opts.knn_at_init,
            progress: opts.progress,
        };
        let config = match &opts.device {
            None => p.config.clone(),
            Some(d) => {
                let mut c = p.config.clone().into_inner();
                c.device = d.clone();
                c.validate().map_err(|e| SweepError::Point {
                    path: sweep.path.clone(),
                    index: p.index,
                    point: format!("--device {d}"),
                    message: e.to_string(),
                })?
            }
        };
        match train(&config, &rd, &topts) {
            Ok(s) if s.status == RunStatus::Diverged => out.diverged += 1,
            Ok(_) => out.ran += 1,
            Err(e) => {
                eprintln!("  run {} failed: {e}", p.run_id);
                out.failed.push(format!("{}: {e}", p.run_id));
            }
        }
        write_runs_csv(sweep, &opts.results_root)?;
    }
    write_runs_csv(sweep, &opts.results_root)?;
    Ok(out)
}

/// Rebuild `results/<sweep>/runs.csv` from the run directories (`--collect`).
pub fn write_runs_csv(sweep: &Sweep, root: &Path) -> Result<PathBuf, SweepError> {
    let dir = sweep_dir(sweep, root);
    std::fs::create_dir_all(&dir).map_err(|source| SweepError::Io { path: dir.clone(), source })?;
    let path = dir.join("runs.csv");
    write_csv(&path, &header(&sweep.keys), &collect(sweep, &dir))?;
    Ok(path)
}
