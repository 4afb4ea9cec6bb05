//! What a run writes as it goes: one metrics row per epoch (before that epoch's checkpoint, so
//! a kill in between replays the epoch on resume), the checkpoint, and the summary's figures.

use super::learner::Learner;
use super::state::learner_to_checkpoint;
use super::TrainError;
use crate::io::run_dir::{write_metrics, EpochMetrics, RunDir, RunSummary};

/// Running sums over an epoch's steps.
#[derive(Debug, Clone, Copy, Default)]
pub struct EpochSums {
    /// Σ loss.
    pub loss: f64,
    /// Σ contrast_acc1.
    pub acc: f64,
    /// Steps.
    pub count: usize,
}

impl EpochSums {
    /// Mean loss so far.
    pub fn loss(&self) -> f64 {
        self.loss / self.count.max(1) as f64
    }

    /// Mean (1+K)-way accuracy so far.
    pub fn acc(&self) -> f64 {
        self.acc / self.count.max(1) as f64
    }
}

/// Append `row` to the run's metrics and rewrite metrics.csv.
pub fn push_row(dir: &RunDir, rows: &mut Vec<EpochMetrics>, row: EpochMetrics) -> Result<(), TrainError> {
    rows.push(row);
    Ok(write_metrics(&dir.metrics(), rows)?)
}

/// Write the checkpoint of the state after `epoch` epochs and `step` steps, `wall_s` seconds
/// of the run's wall time (all attempts) so far.
pub fn save_checkpoint(
    learner: &Learner,
    dir: &RunDir,
    epoch: usize,
    step: usize,
    wall_s: f64,
    summary: &RunSummary,
) -> Result<(), TrainError> {
    let mut ck = learner_to_checkpoint(learner)?;
    ck.metadata.insert("epoch".into(), epoch.to_string());
    ck.metadata.insert("step".into(), step.to_string());
    ck.metadata.insert("wall_s".into(), format!("{wall_s:.3}"));
    ck.metadata.insert("commit".into(), summary.commit.clone());
    if let Some(k) = summary.knn_top1_at_init {
        ck.metadata.insert("knn_top1_at_init".into(), k.to_string());
    }
    Ok(ck.save(&dir.checkpoint())?)
}

/// The summary's figures from the metrics rows: epochs, steps, final loss, mean images/s (the
/// status is the caller's). `epochs` is the last row's epoch for a finished run; a diverged
/// run counts only the epochs it completed (`completed`).
pub fn summarize(summary: &mut RunSummary, rows: &[EpochMetrics], step: usize, completed: Option<usize>) {
    let last = rows.last();
    summary.epochs = completed.unwrap_or_else(|| last.map(|r| r.epoch).unwrap_or(0));
    summary.steps = step;
    summary.final_loss = last.map(|r| r.loss);
    let ips: Vec<f64> = rows.iter().map(|r| r.images_per_s).filter(|v| *v > 0.0).collect();
    summary.images_per_s = ips.iter().sum::<f64>() / ips.len().max(1) as f64;
}
