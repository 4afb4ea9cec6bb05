//! Learning-rate schedules as pure functions of the (fractional) epoch, and the key-encoder
//! momentum schedule as a pure function of the step.
//!
//! Cosine and step follow `adjust_learning_rate` of facebookresearch/moco `main_moco.py`,
//! evaluated at the fractional epoch `e = step / steps_per_epoch` (equal to the official
//! per-epoch value at every epoch start).

use crate::config::{MocoConfig, MomentumSchedule, ScheduleKind, TrainConfig};

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

/// Key-encoder momentum m of optimizer step `step` (counted from 0) of a run of `total` steps:
/// `constant` → `base`; `cosine` → `final_m − (final_m − base)·(1 + cos(π·t/T))/2` with
/// t = min(step, T), T = `total` (solo-learn's `MomentumUpdater.update_tau`), so m = `base` at
/// the first step and `final_m` at t = T. `total = 0` gives `base`.
pub fn momentum_at(kind: MomentumSchedule, base: f64, final_m: f64, step: usize, total: usize) -> f64 {
    match kind {
        MomentumSchedule::Constant => base,
        MomentumSchedule::Cosine if total == 0 => base,
        MomentumSchedule::Cosine => {
            let frac = step.min(total) as f64 / total as f64;
            final_m - (final_m - base) * (1.0 + (std::f64::consts::PI * frac).cos()) / 2.0
        }
    }
}

/// m of step `step` under the run's `moco.*` keys. The trainer passes T = `train.epochs` ×
/// steps per epoch, the lr schedule's span (so with a smaller `train.max_steps` the run stops
/// before m reaches `moco.momentum_final`, as the lr stops before 0).
pub fn key_momentum(moco: &MocoConfig, step: usize, total: usize) -> f64 {
    momentum_at(moco.momentum_schedule, moco.momentum, moco.momentum_final, step, total)
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

    #[test]
    fn momentum_cosine_closed_form_and_constant() {
        let closed = |t: f64, big_t: f64| 1.0 - (1.0 - 0.99) * (1.0 + (std::f64::consts::PI * t / big_t).cos()) / 2.0;
        let m = |t| momentum_at(MomentumSchedule::Cosine, 0.99, 1.0, t, 1000);
        assert!((m(0) - 0.99).abs() < 1e-15);
        assert!((m(500) - 0.995).abs() < 1e-12); // cos(π/2) = 0: the midpoint
        assert!((m(1000) - 1.0).abs() < 1e-15);
        for t in [0, 1, 250, 500, 999, 1000] {
            assert!((m(t) - closed(t as f64, 1000.0)).abs() < 1e-14, "t = {t}");
        }
        assert!((m(2000) - 1.0).abs() < 1e-15); // clamped at T
                                                // The golden fixture's schedule: 0.9 → 1.0 over T = 2 steps uses 0.9 then 0.95.
        assert!((momentum_at(MomentumSchedule::Cosine, 0.9, 1.0, 0, 2) - 0.9).abs() < 1e-15);
        assert!((momentum_at(MomentumSchedule::Cosine, 0.9, 1.0, 1, 2) - 0.95).abs() < 1e-15);
        assert_eq!(momentum_at(MomentumSchedule::Cosine, 0.9, 1.0, 0, 0), 0.9);
        for t in [0, 7, 1000] {
            assert_eq!(momentum_at(MomentumSchedule::Constant, 0.99, 1.0, t, 1000), 0.99);
        }
        let moco = MocoConfig {
            momentum_schedule: MomentumSchedule::Cosine,
            momentum: 0.996,
            momentum_final: 1.0,
            ..Default::default()
        };
        assert!((key_momentum(&moco, 50, 100) - 0.998).abs() < 1e-12);
    }
}
