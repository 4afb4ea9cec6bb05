//! Learning-rate schedules as pure functions of the (fractional) epoch.
//!
//! Cosine and step follow `adjust_learning_rate` of facebookresearch/moco `main_moco.py`,
//! evaluated at the fractional epoch `e = step / steps_per_epoch` (equal to the official
//! per-epoch value at every epoch start).

use crate::config::{ScheduleKind, TrainConfig};

/// lr at fractional epoch `e` of a schedule spanning `epochs`.
pub fn lr_at(kind: ScheduleKind, base: f64, e: f64, epochs: usize, milestones: &[usize], warmup_epochs: f64) -> f64 {
    let lr = match kind {
        ScheduleKind::Cosine => base * 0.5 * (1.0 + (std::f64::consts::PI * e / epochs as f64).cos()),
        ScheduleKind::Step => base * 0.1f64.powi(milestones.iter().filter(|&&m| e.floor() >= m as f64).count() as i32),
        ScheduleKind::Constant => base,
    };
    if warmup_epochs > 0.0 && e < warmup_epochs {
        lr * (e / warmup_epochs)
    } else {
        lr
    }
}

/// Base lr after the optional linear scaling rule (lr × batch / reference).
pub fn base_lr(cfg: &TrainConfig) -> f64 {
    match cfg.lr_reference_batch {
        Some(r) => cfg.lr * cfg.batch_size as f64 / r as f64,
        None => cfg.lr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_end_points() {
        assert_eq!(lr_at(ScheduleKind::Cosine, 0.06, 0.0, 200, &[], 0.0), 0.06);
        assert!((lr_at(ScheduleKind::Cosine, 0.06, 100.0, 200, &[], 0.0) - 0.03).abs() < 1e-12); // cos(π/2)
        assert!(lr_at(ScheduleKind::Cosine, 0.06, 200.0, 200, &[], 0.0).abs() < 1e-12);
    }

    #[test]
    fn step_end_points_and_warmup() {
        let m = [120, 160];
        assert_eq!(lr_at(ScheduleKind::Step, 0.03, 119.9, 200, &m, 0.0), 0.03);
        assert!((lr_at(ScheduleKind::Step, 0.03, 120.0, 200, &m, 0.0) - 0.003).abs() < 1e-12);
        assert!((lr_at(ScheduleKind::Step, 0.03, 199.0, 200, &m, 0.0) - 0.0003).abs() < 1e-12);
        assert_eq!(lr_at(ScheduleKind::Constant, 0.1, 0.0, 10, &[], 2.0), 0.0);
        assert!((lr_at(ScheduleKind::Constant, 0.1, 1.0, 10, &[], 2.0) - 0.05).abs() < 1e-12);
        assert_eq!(lr_at(ScheduleKind::Constant, 0.1, 2.0, 10, &[], 2.0), 0.1);
        let cfg = TrainConfig {
            lr: 0.03,
            batch_size: 512,
            lr_reference_batch: Some(256),
            ..Default::default()
        };
        assert!((base_lr(&cfg) - 0.06).abs() < 1e-12);
    }
}
