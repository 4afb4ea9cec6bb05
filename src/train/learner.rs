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
    /// Enqueue these keys `(N, C)`, dropping the oldest N.
    Enqueue(Tensor),
    /// Move the bank rows of these images towards their queries.
    Bank(Tensor),
    /// Nothing (end-to-end).
    None,
}

/// Random choices of one step, drawn by the trainer (or given by a test).
#[derive(Debug, Clone, Default)]
pub struct StepChoices {
    /// Shuffle-BN permutation of the batch (None = no shuffle).
    pub permutation: Option<Vec<u32>>,
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
    /// (1+K)-way accuracy of the positive.
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
        }
        if let Dictionary::Bank(bank) = &self.dictionary {
            let rows = bank.features.dim(0).unwrap_or(1) as u32;
            c.negatives = Some((0..self.cfg.dictionary.size).map(|_| rng.random_range(0..rows)).collect());
        }
        c
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
        let perm = choices.permutation.as_deref();
        // MoCo's key branch (EMA, then the key encoder's forward) runs before the query's
        // forward: the EMA reads only θq, which the query forward does not change (BN running
        // statistics are not part of it), so the result is the same bits as the official order,
        // and the key encoder's activations come and go before the query's graph exists
        // (lower peak memory).
        let query = |s: &Self| -> Result<Tensor> { l2_normalize(&s.encoder_q.forward(&views[0], s.train_mode())?) }; // (N, C)
                                                                                                                     // (q, positive keys (N, C), negatives (K, C), whether negatives[i] is row i's own
                                                                                                                     // positive, and the dictionary update that follows a successful SGD step)
        let (q, k_pos, negatives, mask_diagonal, update) = match &self.dictionary {
            Dictionary::Queue {
                key_store,
                key_encoder,
                queue,
            } => {
                ema_update(&self.q_store, key_store, self.cfg.moco.momentum)?;
                let k = self.shuffled_forward(key_encoder, &views[1], perm)?.detach(); // (N, C)
                (query(self)?, k.clone(), queue.keys.clone(), false, Update::Enqueue(k))
            }
            Dictionary::Bank(bank) => {
                let idx = Tensor::new(indices, &self.device)?;
                let neg_idx = choices.negatives.as_deref().unwrap_or(&[]);
                let neg = bank.rows(&Tensor::new(neg_idx, &self.device)?)?; // (K, C)
                (query(self)?, bank.rows(&idx)?, neg, false, Update::Bank(idx))
            }
            Dictionary::EndToEnd => {
                let q = query(self)?;
                let k = self.shuffled_forward(&self.encoder_q, &views[1], perm)?; // (N, C), with gradient
                (q, k.clone(), k, true, Update::None)
            }
        };
        let (loss, acc) = info_nce(&q, &k_pos, &negatives, self.cfg.moco.temperature, mask_diagonal)?; // over (N, 1+K)
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
            (Dictionary::Bank(bank), Update::Bank(idx)) => bank.update(&idx, &q.detach())?,
            _ => {}
        }
        Ok(stats)
    }
}
