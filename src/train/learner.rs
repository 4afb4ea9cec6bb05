//! The state of one self-supervised run (encoders, dictionary, optimizer) and its training
//! step for each of the paper's three dictionary mechanisms, all through one encoder type and
//! one loss ([`super::loss`]).
//!
//! `moco` step (Algorithm 1 of the paper, official order):
//! 1. `q = normalize(f_q(x_q))`                                  // (N, C)
//! 2. θk ← m·θk + (1−m)·θq                                       // before the key forward
//! 3. keys shuffled across BN groups, `k = normalize(f_k(x_k))`, un-shuffled, detached
//! 4. logits = [q·k, q·queue] / τ, loss = CE(logits, 0)          // (N, 1+K)
//! 5. SGD on θq; enqueue k (dropping the oldest N keys)

use super::dictionary::{KeyQueue, MemoryBank};
use crate::nn::ema::ema_update;
use crate::nn::loss::{info_nce, l2_normalize};
use crate::nn::optim::Sgd;
use crate::config::{DictionaryMode, ValidRunConfig};
use crate::model::{BnMode, Encoder, ParamStore};
use candle_core::{Device, Result, Tensor};
use rand::seq::SliceRandom;
use rand::Rng;

/// State update that follows a successful SGD step (enqueue, bank update).
type AfterStep = Box<dyn FnOnce(&mut Learner) -> Result<()>>;

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

/// Encoders, dictionary and optimizer of a run.
pub struct Learner {
    /// Run config.
    pub cfg: ValidRunConfig,
    /// θq.
    pub q_store: ParamStore,
    /// f_q.
    pub encoder_q: Encoder,
    /// θk and f_k (moco mode).
    pub key: Option<(ParamStore, Encoder)>,
    /// Queue (moco mode).
    pub queue: Option<KeyQueue>,
    /// Bank (memory_bank mode).
    pub bank: Option<MemoryBank>,
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
        let mode = cfg.dictionary.mode;
        let key = if mode == DictionaryMode::Moco {
            let k_store = q_store.deep_copy()?;
            let enc = Encoder::new(&cfg.model, &k_store, cfg.seed)?;
            Some((k_store, enc))
        } else {
            None
        };
        let queue = if mode == DictionaryMode::Moco {
            Some(KeyQueue::new(cfg.dictionary.size, dim, cfg.seed, device)?)
        } else {
            None
        };
        let bank = if mode == DictionaryMode::MemoryBank {
            Some(MemoryBank::new(train_len, dim, cfg.dictionary.bank_momentum, cfg.seed, device)?)
        } else {
            None
        };
        Ok(Self {
            cfg: cfg.clone(),
            q_store,
            encoder_q,
            key,
            queue,
            bank,
            optim: Sgd::new(cfg.train.sgd_momentum, cfg.train.weight_decay),
            device: device.clone(),
        })
    }

    /// Views the input pipeline must produce per image.
    pub fn views(&self) -> usize {
        if self.cfg.dictionary.mode == DictionaryMode::MemoryBank {
            1
        } else {
            2
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
        if let Some(bank) = &self.bank {
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
        let t = self.cfg.moco.temperature;
        let perm = choices.permutation.as_deref();
        // MoCo's key branch (EMA, then the key encoder's forward) runs before the query's
        // forward: the EMA reads only θq, which the query forward does not change (BN running
        // statistics are not part of it), so the result is the same bits as the official order,
        // and the key encoder's activations come and go before the query's graph exists
        // (lower peak memory).
        let k_moco = match self.cfg.dictionary.mode {
            DictionaryMode::Moco => {
                let (k_store, enc_k) = self.key.as_ref().expect("moco mode has a key encoder");
                ema_update(&self.q_store, k_store, self.cfg.moco.momentum)?;
                Some(self.shuffled_forward(enc_k, &views[1], perm)?.detach()) // (N, C)
            }
            _ => None,
        };
        let q = l2_normalize(&self.encoder_q.forward(&views[0], self.train_mode())?)?; // (N, C)
                                                                                       // (positive keys, negatives, whether negatives[i] is row i's own positive, then)
        let (k_pos, negatives, mask_diagonal, after): (Tensor, Tensor, bool, AfterStep) = match self.cfg.dictionary.mode {
            DictionaryMode::Moco => {
                let k = k_moco.expect("computed above for moco");
                let queue = self.queue.as_ref().expect("moco mode has a queue");
                let keys = queue.keys.clone();
                (
                    k.clone(),
                    keys,
                    false,
                    Box::new(move |s: &mut Self| s.queue.as_mut().expect("queue").enqueue(&k)),
                )
            }
            DictionaryMode::EndToEnd => {
                let k = self.shuffled_forward(&self.encoder_q, &views[1], perm)?; // (N, C), with gradient
                (k.clone(), k, true, Box::new(|_: &mut Self| Ok(())))
            }
            DictionaryMode::MemoryBank => {
                let bank = self.bank.as_ref().expect("memory_bank mode has a bank");
                let idx = Tensor::new(indices, &self.device)?;
                let pos = bank.rows(&idx)?; // (N, C)
                let neg_idx = choices.negatives.as_deref().unwrap_or(&[]);
                let neg = bank.rows(&Tensor::new(neg_idx, &self.device)?)?; // (K, C)
                let qd = q.detach();
                (
                    pos,
                    neg,
                    false,
                    Box::new(move |s: &mut Self| s.bank.as_mut().expect("bank").update(&idx, &qd)),
                )
            }
        };
        let (loss, acc) = info_nce(&q, &k_pos, &negatives, t, mask_diagonal)?; // over (N, 1+K) logits
        let loss_v = loss.to_scalar::<f32>()?;
        if !loss_v.is_finite() {
            return Ok(StepStats {
                loss: loss_v,
                contrast_acc1: acc,
            });
        }
        let grads = loss.backward()?;
        let params = self.q_store.trainable();
        self.optim.step(&params, &grads, lr)?;
        after(self)?;
        Ok(StepStats {
            loss: loss_v,
            contrast_acc1: acc,
        })
    }
}
