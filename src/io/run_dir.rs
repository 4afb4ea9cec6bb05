//! The layout of a run directory and the files in it.
//!
//! ```text
//! RUN_DIR/config.toml              fully resolved config, written before training
//! RUN_DIR/metrics.csv              one row per epoch (rewritten atomically each epoch)
//! RUN_DIR/checkpoint.safetensors   both encoders, dictionary, optimizer, counters (each epoch)
//! RUN_DIR/summary.json             status and final numbers (written last; a run is done iff
//!                                  it exists with status ok or diverged)
//! RUN_DIR/.lock                    the PID of the one process writing the run, while it does
//! ```
//!
//! [`RunDir::is_run_file`] and [`check_output`] keep commands from writing over a run's files
//! or over their own inputs.

use super::atomic::write_atomic;
use super::error::FileError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Paths inside a run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    /// The folder.
    pub root: PathBuf,
}

impl RunDir {
    /// Wrap a folder path.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    /// `config.toml`.
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    /// `metrics.csv`.
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.csv")
    }
    /// `checkpoint.safetensors`.
    pub fn checkpoint(&self) -> PathBuf {
        self.root.join("checkpoint.safetensors")
    }
    /// `summary.json`.
    pub fn summary(&self) -> PathBuf {
        self.root.join("summary.json")
    }

    /// `.lock`.
    pub fn lock_path(&self) -> PathBuf {
        self.root.join(".lock")
    }

    /// Take the run's writer lock: one process at a time trains a run directory. A lock left
    /// by a process that is gone (killed) is taken over, with a line on stderr.
    pub fn lock(&self) -> Result<RunLock, FileError> {
        let path = self.lock_path();
        for _ in 0..2 {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    use std::io::Write;
                    writeln!(f, "{}", std::process::id()).map_err(FileError::io(&path))?;
                    return Ok(RunLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    match holder.trim().parse::<u32>() {
                        Ok(pid) if pid != std::process::id() && process_alive(pid) => {
                            return Err(FileError::Locked { path, pid });
                        }
                        _ => {
                            eprintln!(
                                "{}: stale lock of a process that is gone ({holder:?}); taking it over",
                                path.display()
                            );
                            std::fs::remove_file(&path).map_err(FileError::io(&path))?;
                        }
                    }
                }
                Err(e) => return Err(FileError::io(&path)(e)),
            }
        }
        Err(FileError::Locked { path, pid: 0 })
    }

    /// Remove temporary files a killed writer left behind (`.NAME.tmpPID` of
    /// [`super::atomic::write_atomic`]); the files they were to replace are intact.
    pub fn remove_stale_temporaries(&self) {
        let Ok(entries) = std::fs::read_dir(&self.root) else { return };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.contains(".tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Whether `path` is one of the run's own files (config, metrics, checkpoint, summary, lock).
    pub fn is_run_file(&self, path: &Path) -> bool {
        [self.config(), self.metrics(), self.checkpoint(), self.summary(), self.lock_path()]
            .iter()
            .any(|f| same_file(f, path))
    }

    /// How the run ended, when it has ended: `summary.json` with status ok or diverged. A run
    /// recorded as failed, or without a summary, is not finished (it may be resumed).
    pub fn finished(&self) -> Option<RunStatus> {
        RunSummary::load(&self.summary())
            .ok()
            .map(|s| s.status)
            .filter(|s| *s != RunStatus::Failed)
    }
}

/// The writer lock of a run directory; released (the file removed) when dropped.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn process_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        // Signal 0 checks existence only; EPERM means it exists under another user.
        let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

/// Whether two paths name the same file (compared after resolving links and `..`; a path that
/// does not exist yet is compared by its resolved parent and name).
pub fn same_file(a: &Path, b: &Path) -> bool {
    fn resolve(p: &Path) -> Option<PathBuf> {
        if let Ok(c) = p.canonicalize() {
            return Some(c);
        }
        let parent = p.parent().filter(|x| !x.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Some(parent.canonicalize().ok()?.join(p.file_name()?))
    }
    match (resolve(a), resolve(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// Refuse an output path that is one of the command's inputs or a run directory's own file
/// (unless `force`): no command writes over what it reads.
pub fn check_output(out: &Path, inputs: &[&Path], force: bool) -> Result<(), FileError> {
    if force {
        return Ok(());
    }
    let clash = |what: String| {
        Err(FileError::Clash {
            path: out.to_path_buf(),
            what,
        })
    };
    for i in inputs {
        if same_file(out, i) {
            return clash(format!("it is this command's input {}", i.display()));
        }
    }
    if let Some(parent) = out.parent() {
        let dir = RunDir::new(if parent.as_os_str().is_empty() { Path::new(".") } else { parent });
        if dir.config().exists() && dir.is_run_file(out) {
            return clash(format!("it is a file of the run directory {}", dir.root.display()));
        }
    }
    Ok(())
}

/// One row of `metrics.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Optimizer steps done so far.
    pub step: usize,
    /// Learning rate at the last step of the epoch.
    pub lr: f64,
    /// Mean InfoNCE loss over the epoch.
    pub loss: f64,
    /// Mean (1+K)-way accuracy of the positive.
    pub contrast_acc1: f64,
    /// Weighted-kNN top-1 on the test split (%), when the monitor ran this epoch.
    pub knn_top1: Option<f64>,
    /// Training images per second over the epoch (steps only, not evaluation).
    pub images_per_s: f64,
    /// Cumulative training wall time in seconds.
    pub wall_s: f64,
}

/// Read `metrics.csv` (empty if absent).
pub fn read_metrics(path: &Path) -> Result<Vec<EpochMetrics>, FileError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let mut r = csv::Reader::from_path(path).map_err(FileError::format(path))?;
    r.deserialize().collect::<Result<Vec<_>, _>>().map_err(FileError::format(path))
}

/// Write all rows of `metrics.csv` atomically.
pub fn write_metrics(path: &Path, rows: &[EpochMetrics]) -> Result<(), FileError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    if rows.is_empty() {
        w.write_record(["epoch", "step", "lr", "loss", "contrast_acc1", "knn_top1", "images_per_s", "wall_s"])
            .map_err(FileError::format(path))?;
    }
    for r in rows {
        w.serialize(r).map_err(FileError::format(path))?;
    }
    let bytes = w.into_inner().map_err(FileError::format(path))?;
    write_atomic(path, &bytes).map_err(FileError::io(path))
}

/// Final state of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Trained to the end.
    Ok,
    /// The loss became NaN/inf (the paper's "fail" for m = 0).
    Diverged,
    /// An error stopped it.
    Failed,
}

/// `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Outcome.
    pub status: RunStatus,
    /// Dictionary mechanism.
    pub mode: String,
    /// Effective negatives per query.
    pub negatives: usize,
    /// Epochs completed.
    pub epochs: usize,
    /// Steps completed.
    pub steps: usize,
    /// Last epoch's mean loss.
    pub final_loss: Option<f64>,
    /// Final kNN top-1 (%) on the test split.
    pub knn_top1: Option<f64>,
    /// Linear-protocol top-1 (%) on the test split.
    pub linear_top1: Option<f64>,
    /// kNN top-1 (%) of the same architecture at its random initialisation, when measured.
    pub knn_top1_at_init: Option<f64>,
    /// Training images per second (mean over epochs).
    pub images_per_s: f64,
    /// Total wall time (s) including evaluation.
    pub wall_s: f64,
    /// Device description.
    pub device: String,
    /// Git commit of the harness.
    pub commit: String,
    /// Error or divergence message.
    pub message: Option<String>,
    /// Streamed files that did not decode and were replaced by the next sample
    /// (`data.skip_corrupt`), one entry per replacement, in this attempt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_files: Vec<String>,
}

impl RunSummary {
    /// Write `summary.json` atomically.
    pub fn save(&self, path: &Path) -> Result<(), FileError> {
        let text = serde_json::to_string_pretty(self).map_err(FileError::format(path))? + "\n";
        write_atomic(path, text.as_bytes()).map_err(FileError::io(path))
    }

    /// Read `summary.json`.
    pub fn load(path: &Path) -> Result<Self, FileError> {
        let text = std::fs::read_to_string(path).map_err(FileError::io(path))?;
        serde_json::from_str(&text).map_err(FileError::format(path))
    }
}

/// The commit the binary was built from (`git rev-parse --short HEAD` at build time, `-dirty`
/// when the sources differed from it, `unknown` without git), or `MOCO_COMMIT` if set.
pub fn git_commit() -> String {
    std::env::var("MOCO_COMMIT").unwrap_or_else(|_| env!("MOCO_BUILD_COMMIT").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_round_trip_with_empty_knn() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.csv");
        let rows = vec![
            EpochMetrics {
                epoch: 1,
                step: 4,
                lr: 0.1,
                loss: 2.5,
                contrast_acc1: 0.25,
                knn_top1: None,
                images_per_s: 10.0,
                wall_s: 1.5,
            },
            EpochMetrics {
                epoch: 2,
                step: 8,
                lr: 0.05,
                loss: 2.0,
                contrast_acc1: 0.5,
                knn_top1: Some(40.0),
                images_per_s: 11.0,
                wall_s: 3.0,
            },
        ];
        write_metrics(&p, &rows).unwrap();
        assert_eq!(read_metrics(&p).unwrap(), rows);
        write_metrics(&p, &[]).unwrap();
        assert!(std::fs::read_to_string(&p).unwrap().starts_with("epoch,step,lr"));
        assert!(read_metrics(&p).unwrap().is_empty());
    }
}
