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
    let clf = Classifier::new(train.classes.len().max(1), encoder.feat_dim(), seed, device)?;
    let mut opt = Sgd::new(cfg.sgd_momentum, cfg.weight_decay);
    let features = TrainFeatures::new(encoder, train, input, cfg, seed, device)?;
    let mut train_loss = 0.0;
    for epoch in 0..cfg.epochs {
        let lr = cfg.lr * 0.1f64.powi(cfg.milestones.iter().filter(|&&m| epoch >= m).count() as i32);
        train_loss = train_epoch(&features, &clf, &mut opt, epoch, lr)?;
        progress(epoch + 1, train_loss);
    }
    Ok(LinearResult {
        top1: test_top1(encoder, test, input, &clf, device)?,
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

/// One epoch of SGD at `lr` over the shuffled training split; returns its mean loss.
fn train_epoch(src: &TrainFeatures, clf: &Classifier, opt: &mut Sgd, epoch: usize, lr: f64) -> Result<f64> {
    let (n, bs, device) = (src.train.len(), src.batch_size, src.device);
    let order = epoch_order(n, src.seed ^ 0x11ea, epoch as u64, true);
    let (mut sum, mut count) = (0.0, 0usize);
    for start in (0..n).step_by(bs) {
        let len = bs.min(n - start);
        let idx: Vec<u32> = order[start..start + len].iter().map(|&i| i as u32).collect();
        let feats = src.batch(&order, start, len, &idx, epoch)?;
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

/// Top-1 (%) of the classifier on the un-augmented features of `test`.
fn test_top1(encoder: &Encoder, test: &ImageSet, input: EvalInput, clf: &Classifier, device: &Device) -> Result<f64> {
    let test_feats = extract(encoder, test, input, FeatureKind::Backbone, 256, device, |_| {})?;
    let pred = clf.logits(&test_feats)?.argmax(D::Minus1)?.to_vec1::<u32>()?;
    let correct = pred.iter().zip(&test.labels).filter(|(p, l)| p == l).count();
    Ok(100.0 * correct as f64 / test.len().max(1) as f64)
}
