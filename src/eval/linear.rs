//! The linear classification protocol (`main_lincls.py`): frozen backbone (BN in eval mode),
//! a linear layer initialised N(0, 0.01²) / 0, SGD lr 30, momentum 0.9, wd 0, 100 epochs,
//! lr ×0.1 at 60 and 80, batch 256; top-1 on the test split.
//!
//! `cached` computes the un-augmented features once (fast); `augmented` draws
//! RandomResizedCrop(0.08–1) + flip each epoch through the frozen backbone, as main_lincls.

use super::features::{extract, EvalInput};
use crate::config::{FeatureKind, LinearConfig, LinearFeatures};
use crate::data::augment::AugmentParams;
use crate::data::loader::{epoch_order, make_batch, PipelineSpec};
use crate::data::ImageSet;
use crate::model::{BnMode, Encoder};
use crate::nn::loss::cross_entropy;
use crate::nn::optim::Sgd;
use crate::rng::{stream, Purpose};
use candle_core::{Device, Result, Tensor, Var, D};
use rand_distr::{Distribution, Normal};

/// Result of the protocol.
#[derive(Debug, Clone, Copy)]
pub struct LinearResult {
    /// Test top-1 (%).
    pub top1: f64,
    /// Last epoch's mean training loss.
    pub train_loss: f64,
}

/// Train the linear classifier on frozen features and report test top-1.
#[allow(clippy::too_many_arguments)]
pub fn linear_protocol(
    encoder: &Encoder,
    train: &ImageSet,
    test: &ImageSet,
    input: EvalInput,
    cfg: &LinearConfig,
    seed: u64,
    device: &Device,
    mut progress: impl FnMut(usize, f64),
) -> Result<LinearResult> {
    let classes = train.classes.len().max(1);
    let dim = encoder.feat_dim();
    let normal = Normal::new(0.0f32, 0.01).map_err(candle_core::Error::wrap)?;
    let mut rng = stream(seed, Purpose::Probe, 0, 0);
    let w = Var::from_tensor(&Tensor::from_vec(
        (0..classes * dim).map(|_| normal.sample(&mut rng)).collect::<Vec<f32>>(),
        (classes, dim),
        device,
    )?)?;
    let b = Var::from_tensor(&Tensor::zeros(classes, candle_core::DType::F32, device)?)?;
    let params = vec![("fc.weight".to_string(), w.clone()), ("fc.bias".to_string(), b.clone())];
    let mut opt = Sgd::new(cfg.sgd_momentum, cfg.weight_decay);
    let cached = match cfg.features {
        LinearFeatures::Cached => Some(extract(encoder, train, input, FeatureKind::Backbone, 256, device, |_| {})?),
        LinearFeatures::Augmented => None,
    };
    let spec = PipelineSpec {
        params: AugmentParams::linear_train(),
        image_size: input.image_size,
        mean: input.mean,
        std: input.std,
        views: 1,
        seed: seed ^ 0x11ea,
    };
    let n = train.len();
    let bs = cfg.batch_size.min(n);
    let mut train_loss = 0.0;
    for epoch in 0..cfg.epochs {
        let lr = cfg.lr * 0.1f64.powi(cfg.milestones.iter().filter(|&&m| epoch >= m).count() as i32);
        let order = epoch_order(n, seed ^ 0x11ea, epoch as u64, true);
        let (mut sum, mut count) = (0.0, 0usize);
        for start in (0..n).step_by(bs) {
            let len = bs.min(n - start);
            let idx: Vec<u32> = order[start..start + len].iter().map(|&i| i as u32).collect();
            let feats = match &cached {
                Some(f) => f.index_select(&Tensor::new(idx.as_slice(), device)?, 0)?,
                None => {
                    let batch = make_batch(train, &order, start, len, epoch as u64, &spec);
                    let x = Tensor::from_vec(
                        batch.views.into_iter().next().unwrap_or_default(),
                        (len, 3, input.image_size, input.image_size),
                        device,
                    )?;
                    encoder.features(&x, BnMode::Eval)?.detach()
                }
            };
            let labels: Vec<u32> = idx.iter().map(|&i| train.labels[i as usize]).collect();
            let logits = feats.matmul(&w.as_tensor().t()?)?.broadcast_add(b.as_tensor())?;
            let loss = cross_entropy(&logits, &Tensor::new(labels.as_slice(), device)?)?;
            let lv = loss.to_scalar::<f32>()? as f64;
            if !lv.is_finite() {
                candle_core::bail!("linear protocol: loss became {lv} at epoch {}", epoch + 1);
            }
            opt.step(&params, &loss.backward()?, lr)?;
            sum += lv * len as f64;
            count += len;
        }
        train_loss = sum / count.max(1) as f64;
        progress(epoch + 1, train_loss);
    }
    let test_feats = extract(encoder, test, input, FeatureKind::Backbone, 256, device, |_| {})?;
    let pred = test_feats
        .matmul(&w.as_tensor().t()?)?
        .broadcast_add(b.as_tensor())?
        .argmax(D::Minus1)?
        .to_vec1::<u32>()?;
    let correct = pred.iter().zip(&test.labels).filter(|(p, l)| p == l).count();
    Ok(LinearResult {
        top1: 100.0 * correct as f64 / test.len().max(1) as f64,
        train_loss,
    })
}

#[cfg(test)]
mod golden_tmp {
    use super::*;
    use crate::config::{DataSource, RunConfig};
    use crate::model::ParamStore;
    #[test]
    fn golden_dump() {
        let Ok(dir) = std::env::var("GOLDEN_DIR") else { return };
        let mut out = String::new();
        for feats in [LinearFeatures::Cached, LinearFeatures::Augmented] {
            let mut c = RunConfig::default();
            c.seed = 7;
            c.data.source = DataSource::Synthetic;
            c.data.image_size = 16;
            c.data.synthetic_train = 40;
            c.data.synthetic_test = 20;
            c.data.synthetic_classes = 4;
            c.model.width = 4;
            c.model.feature_dim = 16;
            c.model.bn_splits = 2;
            c.eval.linear.epochs = 3;
            c.eval.linear.milestones = vec![1, 2];
            c.eval.linear.batch_size = 16;
            c.eval.linear.features = feats;
            c.train.batch_size = 16;
            c.dictionary.size = 32;
            let cfg = c.validate().unwrap();
            let splits = crate::data::load(&cfg.data, cfg.seed).unwrap();
            let store = ParamStore::new(&Device::Cpu);
            let enc = Encoder::new(&cfg.model, &store, cfg.seed).unwrap();
            let input = crate::eval::eval_input(&cfg);
            let mut prog = Vec::new();
            let r = linear_protocol(
                &enc,
                &splits.train,
                &splits.test,
                input,
                &cfg.eval.linear,
                cfg.seed,
                &Device::Cpu,
                |e, l| prog.push((e, l.to_bits())),
            )
            .unwrap();
            out += &format!("{:?} {} {} {:?}\n", feats, r.top1.to_bits(), r.train_loss.to_bits(), prog);
        }
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(format!("{dir}/linear.txt"), out).unwrap();
    }
}
