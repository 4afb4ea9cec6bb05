//! The two evaluations of a frozen query encoder as the trainer and `moco eval` run them: the
//! transform a config asks for, the kNN monitor and the linear protocol over a dataset's splits,
//! each with a progress bar.

use super::features::{extract, EvalInput};
use super::knn::knn_top1;
use super::linear::linear_protocol;
use crate::config::ValidRunConfig;
use crate::data::Splits;
use crate::model::Encoder;
use crate::progress::bar;
use candle_core::{Device, Result};

/// Images per forward pass when extracting features.
pub const FEATURE_BATCH: usize = 256;

/// Input of the evaluation transform for a config.
pub fn eval_input(cfg: &ValidRunConfig) -> EvalInput {
    EvalInput::of(&cfg.data)
}

/// Weighted kNN top-1 (%) of `encoder` with train features as the memory and test as queries.
pub fn knn_eval(encoder: &Encoder, splits: &Splits, cfg: &ValidRunConfig, device: &Device, show: bool) -> Result<f64> {
    let input = eval_input(cfg);
    let pb = bar((splits.train.len() + splits.test.len()) as u64, "kNN".into(), show);
    let kind = cfg.eval.knn_features;
    let train = extract(encoder, &splits.train, input, kind, FEATURE_BATCH, device, |n| pb.inc(n as u64))?;
    let test = extract(encoder, &splits.test, input, kind, FEATURE_BATCH, device, |n| pb.inc(n as u64))?;
    pb.finish_and_clear();
    let classes = splits.train.classes.len();
    knn_top1(
        &train,
        &splits.train.labels,
        &test,
        &splits.test.labels,
        classes,
        cfg.eval.knn_k,
        cfg.eval.knn_t,
    )
}

/// Linear-protocol top-1 (%).
pub fn linear_eval(encoder: &Encoder, splits: &Splits, cfg: &ValidRunConfig, device: &Device, show: bool) -> Result<f64> {
    let pb = bar(cfg.eval.linear.epochs as u64, "linear".into(), show);
    let r = linear_protocol(
        encoder,
        &splits.train,
        &splits.test,
        eval_input(cfg),
        &cfg.eval.linear,
        cfg.seed,
        device,
        |e, loss| {
            pb.set_position(e as u64);
            pb.set_message(format!("loss {loss:.3}"));
        },
    )?;
    pb.finish_and_clear();
    Ok(r.top1)
}
