//! Where a run starts: from the beginning (random or `--init` weights), or, with `--resume`,
//! from its last checkpoint. All random streams are functions of (seed, epoch, step), so a
//! resumed run replays exactly what the killed one would have done.

use super::learner::Learner;
use super::state::{learner_from_checkpoint, learner_init_from};
use super::trainer::TrainOptions;
use super::TrainError;
use crate::config::{Override, RunConfig, ValidRunConfig};
use crate::io::checkpoint::{Checkpoint, CheckpointError};
use crate::io::run_dir::{read_metrics, EpochMetrics, RunDir};

/// The loop's position and what the run directory already holds.
#[derive(Debug, Default)]
pub struct Start {
    /// Optimizer steps already done.
    pub step: usize,
    /// Epoch (from 0) the loop starts in.
    pub epoch: usize,
    /// Batch of that epoch the loop starts at (a run stopped mid-epoch by `train.max_steps`).
    pub first_batch: usize,
    /// metrics.csv rows up to the checkpoint.
    pub rows: Vec<EpochMetrics>,
    /// kNN top-1 at initialisation, when an earlier attempt measured it.
    pub knn_top1_at_init: Option<f64>,
    /// Wall time (s) of the earlier attempts up to the checkpoint.
    pub wall_s: f64,
}

/// Config keys a resume may change: where and how fast the run computes, not what
/// (`eval.knn_chunk` bounds the kNN search's memory; its result is the same).
pub const RESUMABLE_KEYS: [&str; 4] = ["device", "data.workers", "data.prefetch", "eval.knn_chunk"];

/// The config to resume a run with: its recorded `config.toml` with `overrides`, which may
/// change only [`RESUMABLE_KEYS`]; any other change is refused, naming the key, its recorded
/// value and the new one (config.toml stays the config that trained every epoch).
pub fn resume_config(dir: &RunDir, overrides: &[Override]) -> Result<ValidRunConfig, TrainError> {
    let path = dir.config();
    let recorded = RunConfig::load_overridden(Some(&path), &[])?;
    let asked = RunConfig::load_overridden(Some(&path), overrides)?;
    for (key, old, new) in crate::config::changed_keys(&recorded, &asked) {
        if !RESUMABLE_KEYS.contains(&key.as_str()) {
            return Err(TrainError::ResumeChange {
                dir: dir.root.clone(),
                key,
                recorded: old,
                asked: new,
            });
        }
    }
    Ok(asked.validate()?)
}

/// Load what `opts` asks for into `learner` and say where the loop starts: the checkpoint
/// when resuming a run that has one, else the `--init` weights (recorded as `train.init`, so a
/// run killed before its first checkpoint starts from them again), else nothing.
pub fn start(learner: &mut Learner, dir: &RunDir, opts: &TrainOptions, steps_per_epoch: usize) -> Result<Start, TrainError> {
    let ck_path = dir.checkpoint();
    if opts.resume && ck_path.exists() {
        let ck = Checkpoint::load(&ck_path)?;
        learner_from_checkpoint(learner, &ck, &ck_path)?;
        let step: usize = ck
            .metadata
            .get("step")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| CheckpointError::Config {
                path: ck_path.clone(),
                message: "checkpoint has no step in its metadata".into(),
            })?;
        // Position from the step count: a run stopped mid-epoch by train.max_steps continues
        // inside that epoch (its partial metrics row is dropped and redone for the rest).
        let epoch = step / steps_per_epoch;
        let mut rows = read_metrics(&dir.metrics())?;
        rows.retain(|r| r.epoch <= epoch);
        eprintln!("resuming {} at epoch {epoch} (step {step})", dir.root.display());
        let meta = |k: &str| ck.metadata.get(k).and_then(|v| v.parse().ok());
        return Ok(Start {
            step,
            epoch,
            first_batch: step % steps_per_epoch,
            rows,
            knn_top1_at_init: meta("knn_top1_at_init"),
            wall_s: meta("wall_s").unwrap_or(0.0),
        });
    }
    if opts.resume {
        eprintln!("resuming {}: no checkpoint yet, starting from the beginning", dir.root.display());
    }
    if let Some(init) = &opts.init {
        let ck = Checkpoint::load_any(init)?;
        for note in learner_init_from(learner, &ck, init)? {
            eprintln!("init: {note}");
        }
    }
    Ok(Start::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resume_with(dir: &RunDir, set: &[&str]) -> Result<ValidRunConfig, TrainError> {
        let set: Vec<Override> = set.iter().map(|s| Override::parse(s).unwrap()).collect();
        resume_config(dir, &set)
    }

    #[test]
    fn a_resume_may_change_the_knn_chunk_but_not_what_knn_computes() {
        let root = tempfile::tempdir().unwrap();
        let dir = RunDir::new(root.path());
        std::fs::write(dir.config(), RunConfig::default().to_toml()).unwrap();
        let cfg = resume_with(&dir, &["eval.knn_chunk=64", "data.workers=1"]).unwrap();
        assert_eq!((cfg.eval.knn_chunk, cfg.data.workers), (64, 1));
        let e = resume_with(&dir, &["eval.knn_k=5"]).unwrap_err().to_string();
        assert!(e.contains("eval.knn_k = 200") && e.contains("eval.knn_k = 5"), "{e}");
        assert!(
            e.contains("only device, data.workers, data.prefetch, eval.knn_chunk may change"),
            "{e}"
        );
        // The chunk is still validated.
        let e = resume_with(&dir, &["eval.knn_chunk=0"]).unwrap_err().to_string();
        assert_eq!(e, "eval.knn_chunk must be > 0, got 0");
    }
}
