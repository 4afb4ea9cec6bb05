//! The layout of a run directory and the files in it.
//!
//! ```text
//! RUN_DIR/config.toml              fully resolved config, written before training
//! RUN_DIR/metrics.csv              one row per epoch (rewritten atomically each epoch)
//! RUN_DIR/checkpoint.safetensors   both encoders, dictionary, optimizer, counters (each epoch)
//! RUN_DIR/summary.json             status and final numbers (written last; a run is done iff
//!                                  it exists with status ok or diverged)
//! ```

use super::atomic::write_atomic;
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
pub fn read_metrics(path: &Path) -> Result<Vec<EpochMetrics>, String> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let mut r = csv::Reader::from_path(path).map_err(|e| format!("{}: {e}", path.display()))?;
    r.deserialize()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Write all rows of `metrics.csv` atomically.
pub fn write_metrics(path: &Path, rows: &[EpochMetrics]) -> Result<(), String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    if rows.is_empty() {
        w.write_record(["epoch", "step", "lr", "loss", "contrast_acc1", "knn_top1", "images_per_s", "wall_s"])
            .map_err(|e| e.to_string())?;
    }
    for r in rows {
        w.serialize(r).map_err(|e| e.to_string())?;
    }
    let bytes = w.into_inner().map_err(|e| e.to_string())?;
    write_atomic(path, &bytes).map_err(|e| format!("{}: {e}", path.display()))
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
}

impl RunSummary {
    /// Write `summary.json` atomically.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())? + "\n";
        write_atomic(path, text.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Read `summary.json`.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
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
