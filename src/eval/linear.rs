//! The linear classification protocol (`main_lincls.py`): frozen backbone (BN in eval mode),
//! a linear layer initialised N(0, 0.01²) / 0, SGD lr 30, momentum 0.9, wd 0, 100 epochs,
//! lr ×0.1 at 60 and 80, batch 256; top-1 on the test split.
//!
//! `cached` computes the un-augmented features once (fast); `augmented` draws
//! RandomResizedCrop(0.08–1) + flip at `data.image_size` each epoch through the frozen
//! backbone, as main_lincls. The test split always goes through the evaluation transform.
//! `feature_norm = "batch_norm"` puts MAE's / MoCo v3's parameter-free BatchNorm in front of
//! the classifier ([`FeatureNormalizer`]).

use super::feature_norm::FeatureNormalizer;
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
    let clf = Classifier::new(train.classes.len().max(1), encoder.feat_dim(), seed, device)?;
    let mut norm = FeatureNormalizer::new(cfg.feature_norm, encoder.feat_dim(), device)?;
    let mut opt = Sgd::new(cfg.sgd_momentum, cfg.weight_decay);
    let features = TrainFeatures::new(encoder, train, input, cfg, seed, device)?;
    let mut train_loss = 0.0;
    for epoch in 0..cfg.epochs {
        let lr = cfg.lr * 0.1f64.powi(cfg.milestones.iter().filter(|&&m| epoch >= m).count() as i32);
        train_loss = train_epoch(&features, &mut norm, &clf, &mut opt, epoch, lr)?;
        progress(epoch + 1, train_loss);
    }
    Ok(LinearResult {
        top1: test_top1(encoder, test, input, &norm, &clf, device)?,
        train_loss,
    })
}

/// The linear layer trained on the frozen features.
struct Classifier {
    /// `fc.weight`, `(classes, dim)`.
    w: Var,
    /// `fc.bias`, `(classes,)`.
    b: Var,
    /// Both, named, for the optimiser.
    params: Vec<(String, Var)>,
}

impl Classifier {
    /// A layer of `classes` outputs on `dim` features: weights N(0, 0.01²) drawn from the
    /// probe stream of `seed`, biases 0.
    fn new(classes: usize, dim: usize, seed: u64, device: &Device) -> Result<Self> {
        let normal = Normal::new(0.0f32, 0.01).map_err(candle_core::Error::wrap)?;
        let mut rng = stream(seed, Purpose::Probe, 0, 0);
        let w = Var::from_tensor(&Tensor::from_vec(
            (0..classes * dim).map(|_| normal.sample(&mut rng)).collect::<Vec<f32>>(),
            (classes, dim),
            device,
        )?)?;
        let b = Var::from_tensor(&Tensor::zeros(classes, candle_core::DType::F32, device)?)?;
        let params = vec![("fc.weight".to_string(), w.clone()), ("fc.bias".to_string(), b.clone())];
        Ok(Classifier { w, b, params })
    }

    /// Class scores of `feats`, `(n, classes)`.
    fn logits(&self, feats: &Tensor) -> Result<Tensor> {
        feats.matmul(&self.w.as_tensor().t()?)?.broadcast_add(self.b.as_tensor())
    }
}

/// The training split's features: computed once (`cached`) or drawn through the frozen
/// backbone from freshly augmented images (`augmented`).
struct TrainFeatures<'a> {
    /// The frozen encoder.
    encoder: &'a Encoder,
    /// The training split.
    train: &'a ImageSet,
    /// Size and normalisation of the images.
    input: EvalInput,
    /// Where the features live.
    device: &'a Device,
    /// The un-augmented features of every training image, when cached.
    cached: Option<Tensor>,
    /// The augmentation of the `augmented` mode.
    spec: PipelineSpec,
    /// Seed of the epoch shuffles.
    seed: u64,
    /// Images per SGD step.
    batch_size: usize,
}

impl<'a> TrainFeatures<'a> {
    /// Set up the features `cfg.features` asks for (extracting them now when cached).
    fn new(encoder: &'a Encoder, train: &'a ImageSet, input: EvalInput, cfg: &LinearConfig, seed: u64, device: &'a Device) -> Result<Self> {
        let cached = match cfg.features {
            LinearFeatures::Cached => Some(extract(encoder, train, input, FeatureKind::Backbone, 256, device, |_| {})?),
            LinearFeatures::Augmented => None,
        };
        let spec = PipelineSpec::new(AugmentParams::linear_train(), input, 1, seed ^ 0x11ea);
        Ok(TrainFeatures {
            encoder,
            train,
            input,
            device,
            cached,
            spec,
            seed,
            batch_size: cfg.batch_size.min(train.len()),
        })
    }

    /// Features of the `len` images `order[start..start + len]` (their indices `idx`) in `epoch`.
    fn batch(&self, order: &[usize], start: usize, len: usize, idx: &[u32], epoch: usize) -> Result<Tensor> {
        match &self.cached {
            Some(f) => f.index_select(&Tensor::new(idx, self.device)?, 0),
            None => {
                let batch = make_batch(self.train, order, start, len, epoch as u64, &self.spec).map_err(candle_core::Error::wrap)?;
                let x = Tensor::from_vec(
                    batch.views.into_iter().next().unwrap_or_default(),
                    (len, 3, self.input.image_size, self.input.image_size),
                    self.device,
                )?;
                Ok(self.encoder.features(&x, BnMode::Eval)?.detach())
            }
        }
    }
}

/// One epoch of SGD at `lr` over the shuffled training split, the features through `norm`
/// in training mode; returns its mean loss.
fn train_epoch(src: &TrainFeatures, norm: &mut FeatureNormalizer, clf: &Classifier, opt: &mut Sgd, epoch: usize, lr: f64) -> Result<f64> {
    let (n, bs, device) = (src.train.len(), src.batch_size, src.device);
    let order = epoch_order(n, src.seed ^ 0x11ea, epoch as u64, true);
    let (mut sum, mut count) = (0.0, 0usize);
    for start in (0..n).step_by(bs) {
        let len = bs.min(n - start);
        let idx: Vec<u32> = order[start..start + len].iter().map(|&i| i as u32).collect();
        let feats = norm.train(&src.batch(&order, start, len, &idx, epoch)?)?;
        let labels: Vec<u32> = idx.iter().map(|&i| src.train.labels[i as usize]).collect();
        let loss = cross_entropy(&clf.logits(&feats)?, &Tensor::new(labels.as_slice(), device)?)?;
        let lv = loss.to_scalar::<f32>()? as f64;
        if !lv.is_finite() {
            candle_core::bail!("linear protocol: loss became {lv} at epoch {}", epoch + 1);
        }
        opt.step(&clf.params, &loss.backward()?, lr)?;
        sum += lv * len as f64;
        count += len;
    }
    Ok(sum / count.max(1) as f64)
}

/// Top-1 (%) of the classifier on the un-augmented features of `test` (through `norm` in
/// evaluation mode).
fn test_top1(
    encoder: &Encoder,
    test: &ImageSet,
    input: EvalInput,
    norm: &FeatureNormalizer,
    clf: &Classifier,
    device: &Device,
) -> Result<f64> {
    let test_feats = norm.eval(&extract(encoder, test, input, FeatureKind::Backbone, 256, device, |_| {})?)?;
    let pred = clf.logits(&test_feats)?.argmax(D::Minus1)?.to_vec1::<u32>()?;
    let correct = pred.iter().zip(&test.labels).filter(|(p, l)| p == l).count();
    Ok(100.0 * correct as f64 / test.len().max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DataConfig, ModelConfig};
    use crate::model::params::ParamStore;

    fn setup() -> (Encoder, ImageSet, EvalInput) {
        let data = DataConfig {
            image_size: 16,
            synthetic_train: 12,
            synthetic_test: 2,
            synthetic_classes: 3,
            ..Default::default()
        };
        let model = ModelConfig {
            width: 4,
            feature_dim: 8,
            ..Default::default()
        };
        let store = ParamStore::new(&Device::Cpu);
        let enc = Encoder::new(&model, &store, 3).unwrap();
        // Running statistics away from (0, 1), so that eval and train mode differ.
        let x = Tensor::randn(0.5f32, 2., (8, 3, 16, 16), &Device::Cpu).unwrap();
        enc.features(&x, BnMode::Train { splits: 1 }).unwrap();
        (enc, crate::data::synthetic::generate(&data, 1).train, EvalInput::of(&data))
    }

    /// The augmented mode draws RandomResizedCrop + flip at `data.image_size`, and an image's
    /// features do not depend on the batch it is in (the backbone's BN in eval mode; the
    /// augmentation is seeded by the position in the epoch order).
    #[test]
    fn augmented_features_use_linear_train_crops_and_frozen_bn() {
        let (enc, train, input) = setup();
        let cfg = LinearConfig {
            features: LinearFeatures::Augmented,
            ..Default::default()
        };
        let device = Device::Cpu;
        let src = TrainFeatures::new(&enc, &train, input, &cfg, 5, &device).unwrap();
        assert!(src.cached.is_none());
        assert_eq!(src.spec.params, AugmentParams::linear_train());
        assert_eq!(src.spec.output, input);
        assert_eq!(src.spec.views, 1);
        let order = epoch_order(train.len(), 5, 2, true);
        let idx: Vec<u32> = order.iter().map(|&i| i as u32).collect();
        let all = src.batch(&order, 0, 6, &idx[..6], 2).unwrap().to_vec2::<f32>().unwrap();
        let one = src.batch(&order, 4, 1, &idx[4..5], 2).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(one[0], all[4]);
        // Another epoch, other crops.
        let other = src.batch(&order, 4, 1, &idx[4..5], 3).unwrap().to_vec2::<f32>().unwrap();
        assert_ne!(one[0], other[0]);
    }

    /// batch_norm changes what the classifier sees (and so its result) in both modes, and the
    /// protocol leaves the frozen encoder's tensors as they were.
    #[test]
    fn feature_norm_applies_in_both_modes_and_the_encoder_stays_frozen() {
        let (enc, train, input) = setup();
        let before = snapshot(&enc, &train, input);
        for features in [LinearFeatures::Cached, LinearFeatures::Augmented] {
            let run = |feature_norm| {
                let cfg = LinearConfig {
                    epochs: 2,
                    batch_size: 4,
                    lr: 1.0,
                    features,
                    feature_norm,
                    ..Default::default()
                };
                linear_protocol(&enc, &train, &train, input, &cfg, 1, &Device::Cpu, |_, _| {}).unwrap()
            };
            let (plain, bn) = (run(crate::config::FeatureNorm::None), run(crate::config::FeatureNorm::BatchNorm));
            assert!(plain.train_loss.is_finite() && bn.train_loss.is_finite());
            assert_ne!(plain.train_loss, bn.train_loss, "{features:?}");
        }
        assert_eq!(snapshot(&enc, &train, input), before);
    }

    /// The eval-mode features of the training set (a function of every BN buffer and weight).
    fn snapshot(enc: &Encoder, train: &ImageSet, input: EvalInput) -> Vec<Vec<f32>> {
        extract(enc, train, input, FeatureKind::Backbone, 5, &Device::Cpu, |_| {})
            .unwrap()
            .to_vec2()
            .unwrap()
    }
}
