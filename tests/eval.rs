//! Evaluation at scale: the kNN search over the training set in chunks (`eval.knn_chunk`),
//! the linear protocol's `feature_norm`, and the frozen encoder in every evaluation path.

use crate::util::{tiny_config, valid};
use candle_core::{DType, Device, Tensor};
use moco_harness::config::{DictionaryMode, FeatureKind, FeatureNorm, LinearFeatures, RunConfig, ValidRunConfig};
use moco_harness::data::{self, Splits};
use moco_harness::eval::features::{extract, extract_indices};
use moco_harness::eval::knn::knn_top1;
use moco_harness::eval::protocol::FEATURE_BATCH;
use moco_harness::eval::{eval_input, knn_eval, linear_eval};
use moco_harness::model::{BnMode, Encoder, ParamStore};

/// A tiny config, its data, and a random encoder whose BN running statistics have moved
/// away from (0, 1) (so that eval and train mode give different features).
fn setup() -> (RunConfig, Encoder, ParamStore, Splits) {
    let cfg = tiny_config(DictionaryMode::Moco, 1);
    let store = ParamStore::new(&Device::Cpu);
    let enc = Encoder::new(&cfg.model, &store, cfg.seed).unwrap();
    let x = Tensor::randn(0.5f32, 2., (8, 3, 16, 16), &Device::Cpu).unwrap();
    enc.features(&x, BnMode::Train { splits: 1 }).unwrap();
    let splits = data::load(&cfg.data, cfg.seed).unwrap();
    (cfg, enc, store, splits)
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_vec2().unwrap()
}

/// `eval.knn_chunk` bounds the memory, not the result: every chunk size gives the top-1 of
/// the search over all the training features at once.
#[test]
fn knn_top1_is_the_same_for_every_chunk_size() {
    let (cfg, enc, _store, splits) = setup();
    let v = valid(cfg.clone());
    let input = eval_input(&v);
    for kind in [FeatureKind::Backbone, FeatureKind::Head] {
        let train = extract(&enc, &splits.train, input, kind, FEATURE_BATCH, &Device::Cpu, |_| {}).unwrap();
        let test = extract(&enc, &splits.test, input, kind, FEATURE_BATCH, &Device::Cpu, |_| {}).unwrap();
        let (k, t) = (cfg.eval.knn_k, cfg.eval.knn_t);
        let want = knn_top1(&train, &splits.train.labels, &test, &splits.test.labels, 4, k, t).unwrap();
        for chunk in [1, 7, 96, 8192] {
            let mut c = cfg.clone();
            c.eval.knn_chunk = chunk;
            c.eval.knn_features = kind;
            let got = knn_eval(&enc, &splits, &valid(c), &Device::Cpu, false).unwrap();
            assert_eq!(got, want, "{kind:?}, chunk {chunk}");
        }
    }
}

/// The frozen encoder's BN uses its running statistics: an image's features are the same
/// whatever batch it is extracted in (in train mode they would not be).
#[test]
fn an_image_has_the_same_features_in_every_batch() {
    let (cfg, enc, _store, splits) = setup();
    let input = eval_input(&valid(cfg));
    let f = |idx: &[usize], batch| {
        rows(&extract_indices(&enc, &splits.train, idx, input, FeatureKind::Backbone, batch, &Device::Cpu, |_| {}).unwrap())
    };
    let all = rows(
        &extract(
            &enc,
            &splits.train,
            input,
            FeatureKind::Backbone,
            FEATURE_BATCH,
            &Device::Cpu,
            |_| {},
        )
        .unwrap(),
    );
    assert_eq!(f(&[5], 1)[0], all[5]);
    assert_eq!(f(&[9, 5, 3], 2)[1], all[5]);
    assert_eq!(f(&[40, 41, 5, 60, 2], 5)[2], all[5]);
    // The control: batch statistics make the same image's features depend on its batch.
    let train_mode = |idx: &[usize]| {
        let x = moco_harness::data::loader::eval_batch(&splits.train, idx, &input).unwrap();
        let x = Tensor::from_vec(x, (idx.len(), 3, 16, 16), &Device::Cpu).unwrap();
        rows(&enc.features(&x, BnMode::Train { splits: 1 }).unwrap())
    };
    assert_ne!(train_mode(&[5, 9])[0], train_mode(&[5, 40])[0]);
}

/// Every tensor of the encoder (weights and BN buffers), as values.
fn snapshot(store: &ParamStore) -> Vec<(String, Vec<f32>)> {
    store
        .entries()
        .into_iter()
        .map(|(n, v, _)| {
            (
                n,
                v.as_tensor()
                    .to_dtype(DType::F32)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap(),
            )
        })
        .collect()
}

/// kNN (chunked) and the linear protocol (cached and augmented, with and without the feature
/// BatchNorm) leave every weight and BN buffer of the encoder as they were.
#[test]
fn evaluation_leaves_the_encoder_untouched() {
    let (cfg, enc, store, splits) = setup();
    let before = snapshot(&store);
    let mut c = cfg.clone();
    c.eval.knn_chunk = 10;
    knn_eval(&enc, &splits, &valid(c), &Device::Cpu, false).unwrap();
    for (features, norm) in [
        (LinearFeatures::Cached, FeatureNorm::BatchNorm),
        (LinearFeatures::Augmented, FeatureNorm::BatchNorm),
        (LinearFeatures::Augmented, FeatureNorm::None),
    ] {
        let mut c = cfg.clone();
        c.eval.linear.epochs = 1;
        c.eval.linear.batch_size = 16;
        c.eval.linear.features = features;
        c.eval.linear.feature_norm = norm;
        let acc = linear_eval(&enc, &splits, &valid(c), &Device::Cpu, false).unwrap();
        assert!((0.0..=100.0).contains(&acc), "{features:?} {norm:?}: {acc}");
    }
    assert_eq!(snapshot(&store), before);
}

/// The feature BatchNorm changes what the classifier learns from the same frozen features.
#[test]
fn feature_norm_changes_the_linear_result_and_none_is_the_default() {
    let (cfg, enc, _store, splits) = setup();
    let run = |norm| {
        let mut c: RunConfig = cfg.clone();
        c.eval.linear.epochs = 3;
        c.eval.linear.milestones = vec![];
        c.eval.linear.batch_size = 16;
        c.eval.linear.lr = 1.0;
        c.eval.linear.feature_norm = norm;
        let c: ValidRunConfig = valid(c);
        moco_harness::eval::linear::linear_protocol(
            &enc,
            &splits.train,
            &splits.test,
            eval_input(&c),
            &c.eval.linear,
            c.seed,
            &Device::Cpu,
            |_, _| {},
        )
        .unwrap()
    };
    let (plain, bn) = (run(FeatureNorm::None), run(FeatureNorm::BatchNorm));
    assert_ne!(plain.train_loss, bn.train_loss);
    assert_eq!(RunConfig::default().eval.linear.feature_norm, FeatureNorm::None);
    // The comparison is between deterministic runs.
    assert_eq!(run(FeatureNorm::None).train_loss, plain.train_loss);
}

/// The two keys: validated, spelled in TOML, and not written at their defaults (so resolved
/// configs and the sweep run ids hashed from them read as before).
#[test]
fn knn_chunk_and_feature_norm_keys() {
    let e = RunConfig::load(None, &["eval.knn_chunk=0".into()]).unwrap().validate().unwrap_err();
    assert_eq!(e.to_string(), "eval.knn_chunk must be > 0, got 0");
    let c = RunConfig::load(
        None,
        &["eval.knn_chunk=500".into(), "eval.linear.feature_norm=\"batch_norm\"".into()],
    )
    .unwrap();
    assert_eq!((c.eval.knn_chunk, c.eval.linear.feature_norm), (500, FeatureNorm::BatchNorm));
    let text = c.to_toml();
    assert!(
        text.contains("knn_chunk = 500") && text.contains("feature_norm = \"batch_norm\""),
        "{text}"
    );
    assert_eq!(RunConfig::from_toml_str(&text, "resolved").unwrap(), c);
    let defaults = RunConfig::default().to_toml();
    assert!(!defaults.contains("knn_chunk") && !defaults.contains("feature_norm"), "{defaults}");
    assert_eq!(RunConfig::default().eval.knn_chunk, 8192);
    let e = RunConfig::load(None, &["eval.linear.feature_norm=\"layer_norm\"".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("layer_norm") && e.contains("batch_norm"), "{e}");
}
