//! The two evaluations of a frozen query encoder as the trainer and `moco eval` run them: the
//! transform a config asks for, the kNN monitor and the linear protocol over a dataset's splits,
//! each with a progress bar.

use super::features::{extract, extract_indices, EvalInput};
use super::knn::{top1, KnnSearch};
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
///
/// The test features are extracted once; the training set then goes through the encoder
/// `eval.knn_chunk` images at a time, each chunk searched and dropped ([`KnnSearch`]). Memory:
/// M×D test features + knn_chunk×D chunk features + 256×knn_chunk similarities + M×k
/// neighbours (and one batch of [`FEATURE_BATCH`] images), whatever the training set's size;
/// the result is the same for every chunk size.
pub fn knn_eval(encoder: &Encoder, splits: &Splits, cfg: &ValidRunConfig, device: &Device, show: bool) -> Result<f64> {
    let input = eval_input(cfg);
    let pb = bar((splits.train.len() + splits.test.len()) as u64, "kNN".into(), show);
    let kind = cfg.eval.knn_features;
    let test = extract(encoder, &splits.test, input, kind, FEATURE_BATCH, device, |n| pb.inc(n as u64))?;
    let mut search = KnnSearch::new(&test, cfg.eval.knn_k)?;
    let n = splits.train.len();
    for start in (0..n).step_by(cfg.eval.knn_chunk.max(1)) {
        let idx: Vec<usize> = (start..n.min(start + cfg.eval.knn_chunk)).collect();
        let chunk = extract_indices(encoder, &splits.train, &idx, input, kind, FEATURE_BATCH, device, |n| {
            pb.inc(n as u64)
        })?;
        search.add(&chunk)?;
    }
    pb.finish_and_clear();
    let classes = splits.train.classes.len();
    Ok(top1(
        &search.finish(),
        &splits.train.labels,
        &splits.test.labels,
        classes,
        cfg.eval.knn_t,
    ))
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
