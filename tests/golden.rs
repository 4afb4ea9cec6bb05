//! The golden MoCo step: two steps of our `moco` mechanism against the PyTorch reference of
//! Algorithm 1 in `scripts/golden_moco_step.py` (fixture `tests/fixtures/golden_moco_step.safetensors`,
//! regenerate with `python scripts/golden_moco_step.py`). Same initial θq, θk, queue, inputs
//! and shuffle permutations; the losses, updated θq (SGD with momentum and weight decay, BN
//! running stats), θk (EMA + its own BN stats) and the queue must agree within 1e-4.
//!
//! The second fixture (`tests/fixtures/golden_moco_symmetric.safetensors`, same script, or
//! `--symmetric-only`) is two steps of the official CIFAR demo's symmetric loss
//! (`loss_12 + loss_21`, both against the queue before the step, `[k1; k2]` enqueued after)
//! under the cosine key-momentum schedule 0.9 → 1.0 over T = 2 steps (m = 0.9, then 0.95),
//! K = 24; same tolerance.

use candle_core::{Device, Tensor};
use moco_harness::config::{DictionaryMode, HeadKind, MomentumSchedule, RunConfig};
use moco_harness::io::checkpoint::{Checkpoint, HostTensor};
use moco_harness::model::load::store_from_checkpoint;
use moco_harness::model::ParamStore;
use moco_harness::nn::schedule::key_momentum;
use moco_harness::train::{Learner, StepChoices};
use std::path::Path;

const FIXTURE: &str = "tests/fixtures/golden_moco_step.safetensors";
const SYMMETRIC_FIXTURE: &str = "tests/fixtures/golden_moco_symmetric.safetensors";

fn golden_config() -> moco_harness::config::ValidRunConfig {
    let mut c = RunConfig::default();
    c.model.width = 4;
    c.model.head = HeadKind::Mlp;
    c.model.feature_dim = 8;
    c.model.bn_splits = 2;
    c.dictionary.mode = DictionaryMode::Moco;
    c.dictionary.size = 8;
    c.train.batch_size = 4;
    c.moco.temperature = 0.2;
    c.moco.momentum = 0.99;
    c.moco.shuffle_bn = true;
    c.train.sgd_momentum = 0.9;
    c.train.weight_decay = 1e-4;
    c.data.synthetic_train = 16;
    c.validate().expect("golden config is valid")
}

/// A learner holding the fixture's initial θq, θk and queue; and its key store.
fn learner_from_fixture(cfg: &moco_harness::config::ValidRunConfig, ck: &Checkpoint, path: &Path) -> (Learner, ParamStore) {
    let mut learner = Learner::new(cfg, 16, &Device::Cpu).unwrap();
    store_from_checkpoint(&learner.q_store, "init.encoder_q.", ck, path).unwrap();
    let k_store = learner.key_store().unwrap().clone();
    store_from_checkpoint(&k_store, "init.encoder_k.", ck, path).unwrap();
    let q = learner.queue_mut().unwrap();
    q.keys = tensor(ck, "init.queue").t().unwrap().contiguous().unwrap(); // (C, K) → (K, C)
    q.ptr = ints(ck, "init.queue_ptr")[0] as usize;
    (learner, k_store)
}

fn tensor(ck: &Checkpoint, name: &str) -> Tensor {
    ck.tensors
        .get(name)
        .unwrap_or_else(|| panic!("fixture lacks {name}"))
        .to_tensor(&Device::Cpu)
        .unwrap()
}

fn ints(ck: &Checkpoint, name: &str) -> Vec<u32> {
    match &ck.tensors[name] {
        HostTensor::I64(_, v) => v.iter().map(|&x| x as u32).collect(),
        HostTensor::F32(_, v) => v.iter().map(|&x| x as u32).collect(),
    }
}

/// max |a − b| / max(1, max |b|).
fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
    moco_harness::devcheck::max_abs_diff(&a, &b) / scale
}

fn assert_store(store: &ParamStore, ck: &Checkpoint, prefix: &str) {
    let mut worst = (0f32, String::new());
    for (name, var, _) in store.entries() {
        let e = rel_err(var.as_tensor(), &tensor(ck, &format!("{prefix}{name}")));
        if e > worst.0 {
            worst = (e, name.clone());
        }
    }
    assert!(worst.0 < 1e-4, "{prefix}: largest error {} at {}", worst.0, worst.1);
}

#[test]
fn two_moco_steps_match_pytorch_algorithm_1() {
    let path = Path::new(FIXTURE);
    let ck = Checkpoint::load(path).expect("fixture present (scripts/golden_moco_step.py)");
    let cfg = golden_config();
    let lr: f64 = ck.metadata["lr"].parse().unwrap();
    let (mut learner, k_store) = learner_from_fixture(&cfg, &ck, path);
    let expected_loss = tensor(&ck, "expected.loss").to_vec1::<f32>().unwrap();
    for s in 1..=2 {
        let views = [tensor(&ck, &format!("step{s}.x_q")), tensor(&ck, &format!("step{s}.x_k"))];
        let choices = StepChoices {
            permutation: Some(ints(&ck, &format!("step{s}.perm"))),
            ..Default::default()
        };
        let stats = learner.step(&views, &[0, 1, 2, 3], lr, &choices).unwrap();
        let want = expected_loss[s - 1];
        assert!((stats.loss - want).abs() < 1e-4, "step {s}: loss {} vs PyTorch {want}", stats.loss);
    }
    assert_store(&learner.q_store, &ck, "expected.encoder_q.");
    assert_store(&k_store, &ck, "expected.encoder_k.");
    let q = learner.queue().unwrap();
    assert!(rel_err(&q.keys.t().unwrap(), &tensor(&ck, "expected.queue")) < 1e-4);
    assert_eq!(q.ptr, ints(&ck, "expected.queue_ptr")[0] as usize);
}

/// Largest [`rel_err`] over the store's tensors against `prefix<name>`, and where.
fn worst_store_err(store: &ParamStore, ck: &Checkpoint, prefix: &str) -> (f32, String) {
    let mut worst = (0f32, String::new());
    for (name, var, _) in store.entries() {
        let e = rel_err(var.as_tensor(), &tensor(ck, &format!("{prefix}{name}")));
        if e > worst.0 {
            worst = (e, name.clone());
        }
    }
    worst
}

#[test]
fn two_symmetric_steps_with_cosine_momentum_match_pytorch_demo() {
    let path = Path::new(SYMMETRIC_FIXTURE);
    let ck = Checkpoint::load(path).expect("fixture present (scripts/golden_moco_step.py)");
    let meta = |k: &str| -> f64 { ck.metadata[k].parse().unwrap() };
    let mut c = golden_config().into_inner();
    c.dictionary.size = 24;
    c.moco.symmetric = true;
    c.moco.momentum = meta("m");
    c.moco.momentum_schedule = MomentumSchedule::Cosine;
    c.moco.momentum_final = meta("m_final");
    assert_eq!(ck.metadata["momentum_schedule"], "cosine");
    let cfg = c.validate().expect("symmetric golden config is valid");
    let total = meta("total_steps") as usize;
    let lr = meta("lr");
    let (mut learner, k_store) = learner_from_fixture(&cfg, &ck, path);
    let expected_loss = tensor(&ck, "expected.loss").to_vec1::<f32>().unwrap();
    let expected_acc = tensor(&ck, "expected.acc1").to_vec1::<f32>().unwrap();
    let mut loss_err = 0f32;
    for s in 1..=2 {
        let m = key_momentum(&cfg.moco, s - 1, total);
        let want_m = meta(&format!("m_step{s}"));
        assert!((m - want_m).abs() < 1e-12, "step {s}: m {m} vs PyTorch {want_m}");
        learner.key_momentum = m;
        let views = [tensor(&ck, &format!("step{s}.x_1")), tensor(&ck, &format!("step{s}.x_2"))];
        let choices = StepChoices {
            permutation: Some(ints(&ck, &format!("step{s}.perm_k2"))),
            permutation2: Some(ints(&ck, &format!("step{s}.perm_k1"))),
            negatives: None,
        };
        let stats = learner.step(&views, &[0, 1, 2, 3], lr, &choices).unwrap();
        let want = expected_loss[s - 1];
        assert!((stats.loss - want).abs() < 1e-4, "step {s}: loss {} vs PyTorch {want}", stats.loss);
        assert!((stats.contrast_acc1 - expected_acc[s - 1]).abs() < 1e-6, "step {s}: accuracy");
        loss_err = loss_err.max((stats.loss - want).abs());
    }
    let q_err = worst_store_err(&learner.q_store, &ck, "expected.encoder_q.");
    let k_err = worst_store_err(&k_store, &ck, "expected.encoder_k.");
    let q = learner.queue().unwrap();
    let queue_err = rel_err(&q.keys.t().unwrap(), &tensor(&ck, "expected.queue"));
    eprintln!("symmetric golden: loss {loss_err:.2e}, encoder_q {q_err:?}, encoder_k {k_err:?}, queue {queue_err:.2e}");
    assert!(q_err.0 < 1e-4, "encoder_q: largest error {} at {}", q_err.0, q_err.1);
    assert!(k_err.0 < 1e-4, "encoder_k: largest error {} at {}", k_err.0, k_err.1);
    assert!(queue_err < 1e-4, "queue: error {queue_err}");
    assert_eq!(q.ptr, ints(&ck, "expected.queue_ptr")[0] as usize);
    assert_eq!(q.ptr, 16, "two steps of 2N = 8 keys");
}
