//! CUDA tests, compiled only with `--features cuda`. Without a usable GPU each test says so in
//! one line and returns; CI (no `cuda` feature) never builds them.

use moco_harness::config::DictionaryMode;
use moco_harness::io::run_dir::{RunDir, RunStatus};
use moco_harness::train::{train, TrainOptions};

fn gpu() -> Option<candle_core::Device> {
    match candle_core::Device::new_cuda(0) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!(
                "skipped: no usable CUDA device ({})",
                e.to_string().lines().next().unwrap_or_default()
            );
            None
        }
    }
}

/// Every op of the step on the GPU against the CPU path (relative error < 1e-4).
#[test]
fn cuda_ops_match_the_cpu_path() {
    let Some(dev) = gpu() else { return };
    let checks = moco_harness::devcheck::run_checks(&dev).unwrap();
    assert!(checks.iter().all(|c| c.ok()), "{}", moco_harness::devcheck::report(&dev, &checks));
}

/// A short run of each mechanism trains on the GPU and finishes with finite metrics.
#[test]
fn cuda_training_runs() {
    if gpu().is_none() {
        return;
    }
    for mode in [DictionaryMode::Moco, DictionaryMode::MemoryBank, DictionaryMode::EndToEnd] {
        let mut c = crate::util::tiny_config(mode, 2);
        c.device = "cuda".into();
        let dir = tempfile::tempdir().unwrap();
        let rd = RunDir::new(dir.path().join("run"));
        let opts = TrainOptions {
            resume: false,
            init: None,
            knn_at_init: false,
            progress: false,
        };
        let s = train(&crate::util::valid(c), &rd, &opts).unwrap();
        assert_eq!(s.status, RunStatus::Ok, "{mode:?}");
        assert!(s.knn_top1.is_some_and(f64::is_finite), "{mode:?}: {s:?}");
    }
}
