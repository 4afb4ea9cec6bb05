//! The state of one self-supervised run (encoders, dictionary, optimizer) and its training
//! step for each of the paper's three dictionary mechanisms, all through one encoder type and
//! one loss ([`crate::nn::loss`]). The dictionary is one enum ([`Dictionary`]), so a run
//! holds exactly its mechanism's state.
//!
//! `moco` step (Algorithm 1 of the paper, official order):
//! 1. `q = normalize(f_q(x_q))`                                  // (N, C)
//! 2. θk ← m·θk + (1−m)·θq                                       // before the key forward
//! 3. keys shuffled across BN groups, `k = normalize(f_k(x_k))`, un-shuffled, detached
//! 4. logits = [q·k, q·queue] / τ, loss = CE(logits, 0)          // (N, 1+K)
//! 5. SGD on θq; enqueue k (dropping the oldest N keys)
//!
//! m is [`Learner::key_momentum`]: `moco.momentum` unless the trainer sets each step's value
//! of `moco.momentum_schedule` ([`crate::nn::schedule::key_momentum`]).
//!
//! `moco` with `moco.symmetric` (the official CIFAR demo's `ModelMoCo.forward`, `symmetric=True`):
//! both views are queries and keys, against the same queue (as it was before the step):
//! 1. θk ← m·θk + (1−m)·θq, once
//! 2. `k2 = f_k(x_2)` (shuffled by `permutation`), then `k1 = f_k(x_1)` (by `permutation2`)
//! 3. `q1 = f_q(x_1)`, then `q2 = f_q(x_2)`
//! 4. loss = InfoNCE(q1, k2) + InfoNCE(q2, k1) (a sum, as the demo), accuracy their mean
//! 5. SGD on θq; enqueue `[k1; k2]` (2N keys) together
//!
//! Each encoder sees its two batches in the demo's order (f_q: x_1, x_2; f_k: x_2, x_1), so
//! the BN running statistics move as there.

use super::dictionary::{KeyQueue, MemoryBank};
use crate::config::{DictionaryMode, ValidRunConfig};
use crate::model::{BnMode, Encoder, ParamStore};
use crate::nn::ema::ema_update;
use crate::nn::loss::{info_nce, l2_normalize};
use crate::nn::optim::Sgd;
use candle_core::{Device, Result, Tensor};
use rand::seq::SliceRandom;
use rand::Rng;

/// What a step changes in its dictionary after the SGD step succeeded.
enum Update {
    /// Enqueue these keys `(N, C)` (`(2N, C)` symmetric), dropping the oldest as many.
    Enqueue(Tensor),
    /// Move the bank rows of these images `(N,)` towards their queries `(N, C)`.
    Bank(Tensor, Tensor),
    /// Nothing (end-to-end).
    None,
}

/// Random choices of one step, drawn by the trainer (or given by a test).
#[derive(Debug, Clone, Default)]
pub struct StepChoices {
    /// Shuffle-BN permutation of the batch (None = no shuffle): the key forward of the second
    /// view (the symmetric loss's `k2`), or end-to-end's key forward.
    pub permutation: Option<Vec<u32>>,
    /// Shuffle-BN permutation of the symmetric loss's second key forward, `k1 = f_k(x_1)` (None
    /// = no shuffle); drawn after `permutation`, only with `moco.symmetric`.
    pub permutation2: Option<Vec<u32>>,
    /// Memory-bank negatives (K row indices), shared by every query of the batch as the queue
    /// is in `moco` mode (Wu et al.'s NCEAverage draws separate negatives per query; sharing
    /// keeps the three mechanisms' losses identical and the step's cost independent of N·K).
    pub negatives: Option<Vec<u32>>,
}

/// What one step reports.
#[derive(Debug, Clone, Copy)]
pub struct StepStats {
    /// InfoNCE loss (may be NaN/inf: the caller stops the run).
    pub loss: f32,
    /// (1+K)-way accuracy of the positive (symmetric: the mean over the two terms).
    pub contrast_acc1: f32,
}

/// The dictionary of one mechanism (`dictionary.mode`), holding exactly what that mechanism
/// needs.
pub enum Dictionary {
    /// `moco`: the key encoder θk / f_k, updated by EMA, and the FIFO queue of its keys.
    Queue {
        /// θk.
        key_store: ParamStore,
        /// f_k.
        key_encoder: Encoder,
        /// K keys.
        queue: KeyQueue,
    },
    /// `memory_bank`: one feature per training image.
    Bank(MemoryBank),
    /// `end_to_end`: the batch's own keys, no state.
    EndToEnd,
}

/// Encoders, dictionary and optimizer of a run.
pub struct Learner {
    /// Run config.
    pub cfg: ValidRunConfig,
    /// θq.
    pub q_store: ParamStore,
    /// f_q.
    pub encoder_q: Encoder,
    /// The mechanism's dictionary.
    pub dictionary: Dictionary,
    /// Optimizer over θq.
    pub optim: Sgd,
    /// m of the next step's EMA (`moco` mode): `moco.momentum` from [`Learner::new`]; the
    /// trainer sets it before every step from `moco.momentum_schedule`.
    pub key_momentum: f64,
    /// Where tensors live.
    pub device: Device,
}

impl Learner {
    /// Fresh state: θq from the init stream, θk = θq (official `param_k.data.copy_(param_q.data)`),
    /// random unit queue or bank (`train_len` = number of training images).
    pub fn new(cfg: &ValidRunConfig, train_len: usize, device: &Device) -> Result<Self> {
        let q_store = ParamStore::new(device);
        let encoder_q = Encoder::new(&cfg.model, &q_store, cfg.seed)?;
        let dim = cfg.model.feature_dim;
        let dictionary = match cfg.dictionary.mode {
            DictionaryMode::Moco => {
                let key_store = q_store.deep_copy()?;
                let key_encoder = Encoder::new(&cfg.model, &key_store, cfg.seed)?;
                let queue = KeyQueue::new(cfg.dictionary.size, dim, cfg.seed, device)?;
                Dictionary::Queue {
                    key_store,
                    key_encoder,
                    queue,
                }
            }
            DictionaryMode::MemoryBank => {
                Dictionary::Bank(MemoryBank::new(train_len, dim, cfg.dictionary.bank_momentum, cfg.seed, device)?)
            }
            DictionaryMode::EndToEnd => Dictionary::EndToEnd,
        };
        Ok(Self {
            cfg: cfg.clone(),
            q_store,
            encoder_q,
            dictionary,
            optim: Sgd::new(cfg.train.sgd_momentum, cfg.train.weight_decay),
            key_momentum: cfg.moco.momentum,
            device: device.clone(),
        })
    }

    /// θk (`moco` mode).
    pub fn key_store(&self) -> Option<&ParamStore> {
        match &self.dictionary {
            Dictionary::Queue { key_store, .. } => Some(key_store),
            _ => None,
        }
    }

    /// The queue (`moco` mode).
    pub fn queue(&self) -> Option<&KeyQueue> {
        match &self.dictionary {
            Dictionary::Queue { queue, .. } => Some(queue),
            _ => None,
        }
    }

    /// The queue, mutably (`moco` mode).
    pub fn queue_mut(&mut self) -> Option<&mut KeyQueue> {
        match &mut self.dictionary {
            Dictionary::Queue { queue, .. } => Some(queue),
            _ => None,
        }
    }

    /// The bank (`memory_bank` mode).
    pub fn bank_mut(&mut self) -> Option<&mut MemoryBank> {
        match &mut self.dictionary {
            Dictionary::Bank(bank) => Some(bank),
            _ => None,
        }
    }

    /// Views the input pipeline must produce per image.
    pub fn views(&self) -> usize {
        match self.dictionary {
            Dictionary::Bank(_) => 1,
            _ => 2,
        }
    }

    /// Effective number of negatives per query.
    pub fn negatives(&self) -> usize {
        match self.cfg.dictionary.mode {
            DictionaryMode::EndToEnd => self.cfg.train.batch_size - 1,
            _ => self.cfg.dictionary.size,
        }
    }

    fn train_mode(&self) -> BnMode {
        BnMode::Train {
            splits: self.cfg.model.bn_splits,
        }
    }

    /// Draw this step's random choices from `rng`.
    pub fn draw_choices(&self, n: usize, rng: &mut impl Rng) -> StepChoices {
        let mut c = StepChoices::default();
        let mode = self.cfg.dictionary.mode;
        if mode != DictionaryMode::MemoryBank && self.cfg.moco.shuffle_bn && self.cfg.model.bn_splits > 1 {
            let mut p: Vec<u32> = (0..n as u32).collect();
            p.shuffle(rng);
            c.permutation = Some(p);
            if self.symmetric() {
                let mut p: Vec<u32> = (0..n as u32).collect();
                p.shuffle(rng);
                c.permutation2 = Some(p);
            }
        }
        if let Dictionary::Bank(bank) = &self.dictionary {
            let rows = bank.features.dim(0).unwrap_or(1) as u32;
            c.negatives = Some((0..self.cfg.dictionary.size).map(|_| rng.random_range(0..rows)).collect());
        }
        c
    }

    /// The symmetric loss is on (`moco` mode with `moco.symmetric`).
    fn symmetric(&self) -> bool {
        self.cfg.moco.symmetric && matches!(self.dictionary, Dictionary::Queue { .. })
    }

    /// `encoder(x)` normalised, with the batch permuted before and un-permuted after
    /// (shuffle BN): BN groups then mix samples whose positives sit in other groups.
    fn shuffled_forward(&self, enc: &Encoder, x: &Tensor, perm: Option<&[u32]>) -> Result<Tensor> {
        match perm {
            None => l2_normalize(&enc.forward(x, self.train_mode())?),
            Some(p) => {
                let n = p.len();
                let mut inv = vec![0u32; n];
                for (i, &j) in p.iter().enumerate() {
                    inv[j as usize] = i as u32;
                }
                let p = Tensor::new(p, &self.device)?;
                let inv = Tensor::new(inv.as_slice(), &self.device)?;
                let k = enc.forward(&x.index_select(&p, 0)?, self.train_mode())?;
                l2_normalize(&k.index_select(&inv, 0)?)
            }
        }
    }

    /// One training step on `views` (`(N, 3, S, S)` each) of the images `indices` at `lr`.
    /// A non-finite loss is returned before the SGD step and the enqueue / bank update; by then
    /// the EMA and the train-mode BN statistics have moved, so the caller must stop the run
    /// (it does: no checkpoint is written after a divergence).
    pub fn step(&mut self, views: &[Tensor], indices: &[u32], lr: f64, choices: &StepChoices) -> Result<StepStats> {
        if self.symmetric() {
            let (loss, acc, update) = self.symmetric_loss(views, choices)?;
            return self.finish(&loss, acc, lr, update);
        }
        let perm = choices.permutation.as_deref();
        // MoCo's key branch (EMA, then the key encoder's forward) runs before the query's
        // forward: the EMA reads only θq, which the query forward does not change (BN running
        // statistics are not part of it), so the result is the same bits as the official order,
        // and the key encoder's activations come and go before the query's graph exists
        // (lower peak memory).
        let query = |s: &Self| -> Result<Tensor> { s.query(&views[0]) }; // (N, C)

        // (q, positive keys (N, C), negatives (K, C), whether negatives[i] is row i's own
        // positive, and the dictionary update that follows a successful SGD step)
        let (q, k_pos, negatives, mask_diagonal, update) = match &self.dictionary {
            Dictionary::Queue {
                key_store,
                key_encoder,
                queue,
            } => {
                ema_update(&self.q_store, key_store, self.key_momentum)?;
                let k = self.shuffled_forward(key_encoder, &views[1], perm)?.detach(); // (N, C)
                (query(self)?, k.clone(), queue.keys.clone(), false, Update::Enqueue(k))
            }
            Dictionary::Bank(bank) => {
                let idx = Tensor::new(indices, &self.device)?;
                let neg_idx = choices.negatives.as_deref().unwrap_or(&[]);
                let neg = bank.rows(&Tensor::new(neg_idx, &self.device)?)?; // (K, C)
                let q = query(self)?;
                let k_pos = bank.rows(&idx)?;
                let update = Update::Bank(idx, q.detach());
                (q, k_pos, neg, false, update)
            }
            Dictionary::EndToEnd => {
                let q = query(self)?;
                let k = self.shuffled_forward(&self.encoder_q, &views[1], perm)?; // (N, C), with gradient
                (q, k.clone(), k, true, Update::None)
            }
        };
        let (loss, acc) = info_nce(&q, &k_pos, &negatives, self.cfg.moco.temperature, mask_diagonal)?; // over (N, 1+K)
        self.finish(&loss, acc, lr, update)
    }

    /// `normalize(f_q(x))` `(N, C)`, with gradient.
    fn query(&self, x: &Tensor) -> Result<Tensor> {
        l2_normalize(&self.encoder_q.forward(x, self.train_mode())?)
    }

    /// The symmetric loss of the official CIFAR demo on `views` = [x_1, x_2] (`moco` mode): the
    /// EMA once, keys `k2 = f_k(x_2)` then `k1 = f_k(x_1)` (each shuffled by its permutation),
    /// queries `q1`, `q2`; loss = InfoNCE(q1, k2) + InfoNCE(q2, k1) against the same queue,
    /// accuracy the mean of the two, and the update that enqueues `[k1; k2]` `(2N, C)`.
    fn symmetric_loss(&self, views: &[Tensor], choices: &StepChoices) -> Result<(Tensor, f32, Update)> {
        let Dictionary::Queue {
            key_store,
            key_encoder,
            queue,
        } = &self.dictionary
        else {
            candle_core::bail!("moco.symmetric needs dictionary.mode = \"moco\"");
        };
        ema_update(&self.q_store, key_store, self.key_momentum)?;
        // Keys first (no graph), in the demo's order for f_k's BN statistics: x_2, then x_1.
        let k2 = self
            .shuffled_forward(key_encoder, &views[1], choices.permutation.as_deref())?
            .detach(); // (N, C)
        let k1 = self
            .shuffled_forward(key_encoder, &views[0], choices.permutation2.as_deref())?
            .detach(); // (N, C)
        let tau = self.cfg.moco.temperature;
        let (loss_12, acc_12) = info_nce(&self.query(&views[0])?, &k2, &queue.keys, tau, false)?;
        let (loss_21, acc_21) = info_nce(&self.query(&views[1])?, &k1, &queue.keys, tau, false)?;
        let keys = Tensor::cat(&[&k1, &k2], 0)?; // (2N, C)
        Ok(((loss_12 + loss_21)?, 0.5 * (acc_12 + acc_21), Update::Enqueue(keys)))
    }

    /// After the loss: stop on a non-finite loss, else backward, SGD on θq, the dictionary update.
    fn finish(&mut self, loss: &Tensor, acc: f32, lr: f64, update: Update) -> Result<StepStats> {
        let loss_v = loss.to_scalar::<f32>()?;
        let stats = StepStats {
            loss: loss_v,
            contrast_acc1: acc,
        };
        if !loss_v.is_finite() {
            return Ok(stats);
        }
        let grads = loss.backward()?;
        self.optim.step(&self.q_store.trainable(), &grads, lr)?;
        match (&mut self.dictionary, update) {
            (Dictionary::Queue { queue, .. }, Update::Enqueue(k)) => queue.enqueue(&k)?,
            (Dictionary::Bank(bank), Update::Bank(idx, q)) => bank.update(&idx, &q)?,
            _ => {}
        }
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunConfig;
    use rand::SeedableRng;

    fn symmetric_config(symmetric: bool) -> ValidRunConfig {
        let mut c = RunConfig::default();
        c.model.width = 4;
        c.model.feature_dim = 8;
        c.model.bn_splits = 2;
        c.train.batch_size = 4;
        c.dictionary.size = 16;
        c.data.image_size = 16;
        c.data.synthetic_train = 16;
        c.moco.symmetric = symmetric;
        c.validate().expect("valid test config")
    }

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| rand_distr::Distribution::sample(&rand_distr::StandardNormal, &mut rng))
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn symmetric_draws_extend_the_asymmetric_ones() {
        let (asym, sym) = (symmetric_config(false), symmetric_config(true));
        let (la, ls) = (
            Learner::new(&asym, 16, &Device::Cpu).unwrap(),
            Learner::new(&sym, 16, &Device::Cpu).unwrap(),
        );
        let a = la.draw_choices(4, &mut rand_chacha::ChaCha8Rng::seed_from_u64(5));
        let s = ls.draw_choices(4, &mut rand_chacha::ChaCha8Rng::seed_from_u64(5));
        assert_eq!(a.permutation, s.permutation);
        assert!(a.permutation2.is_none());
        let mut p2 = s.permutation2.expect("second permutation drawn");
        p2.sort_unstable();
        assert_eq!(p2, vec![0, 1, 2, 3]);
    }

    #[test]
    fn symmetric_step_enqueues_both_key_batches() {
        let cfg = symmetric_config(true);
        let mut l = Learner::new(&cfg, 16, &Device::Cpu).unwrap();
        let init = l.queue().unwrap().keys.copy().unwrap(); // (16, C)
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let mut written = Vec::new();
        for s in 0..2u64 {
            let views = [randn(&[4, 3, 16, 16], 10 + 2 * s), randn(&[4, 3, 16, 16], 11 + 2 * s)];
            let ch = l.draw_choices(4, &mut rng);
            assert_ne!(ch.permutation, ch.permutation2, "this seed draws two different shuffles");
            let stats = l.step(&views, &[0, 1, 2, 3], 0.05, &ch).unwrap();
            assert!(stats.loss.is_finite() && (0.0..=1.0).contains(&stats.contrast_acc1));
            assert_eq!(l.queue().unwrap().ptr, (8 * (s as usize + 1)) % 16, "2N keys per step");
            // θk is as the step left it (EMA before the keys; SGD changes only θq) and train-mode
            // BN uses batch statistics, so the step's keys can be recomputed.
            let Dictionary::Queue { key_encoder, .. } = &l.dictionary else {
                unreachable!()
            };
            let k2 = l.shuffled_forward(key_encoder, &views[1], ch.permutation.as_deref()).unwrap();
            let k1 = l.shuffled_forward(key_encoder, &views[0], ch.permutation2.as_deref()).unwrap();
            assert!(max_diff(&k1, &k2) > 1e-3);
            written.push(Tensor::cat(&[&k1, &k2], 0).unwrap()); // [k1; k2]
            let keys = &l.queue().unwrap().keys;
            for (i, w) in written.iter().enumerate() {
                assert!(max_diff(&keys.narrow(0, 8 * i, 8).unwrap(), w) < 1e-6, "step {s}: rows of step {i}");
            }
            if s == 0 {
                assert_eq!(max_diff(&keys.narrow(0, 8, 8).unwrap(), &init.narrow(0, 8, 8).unwrap()), 0.0);
            }
        }
    }
}
