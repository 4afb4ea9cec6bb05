//! A named, ordered parameter store: what candle's `VarMap` is not (sorted iteration, a
//! trainable/buffer flag, strict loading).
//!
//! Names are torchvision's state-dict names *without* the `encoder_q.`/`encoder_k.` prefix,
//! which the checkpoint adds. Buffers are BatchNorm running statistics and
//! `num_batches_tracked` (kept as f32 here, written as i64 in checkpoints).

use crate::rng::{stream, Purpose};
use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use rand::Rng;
use rand_distr::{Distribution, Normal};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Whether a tensor is trained by the optimizer or updated by the forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Weights and biases: get gradients, SGD and the EMA.
    Trainable,
    /// BN running stats: updated in train-mode forward; never touched by SGD or the EMA.
    Buffer,
}

/// Initialisation of a new tensor (torchvision's defaults).
#[derive(Debug, Clone, Copy)]
pub enum Init {
    /// Constant.
    Const(f32),
    /// N(0, std²).
    Normal(f32),
    /// U(−b, b).
    Uniform(f32),
}

#[derive(Debug, Default)]
struct Inner {
    vars: BTreeMap<String, (Var, Kind)>,
}

/// Shared handle to a parameter store (modules keep `Var` clones, the store keeps names).
#[derive(Debug, Clone)]
pub struct ParamStore {
    inner: Arc<Mutex<Inner>>,
    device: Device,
}

impl ParamStore {
    /// An empty store on `device`.
    pub fn new(device: &Device) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner::default())),
            device: device.clone(),
        }
    }

    /// The store's device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Fetch `name` if present, else create it with `init` drawn from the init stream of
    /// `seed` keyed by the name (so init does not depend on construction order).
    pub fn get_or_init(&self, name: &str, shape: impl Into<Shape>, kind: Kind, init: Init, seed: u64) -> Result<Var> {
        let shape = shape.into();
        let mut inner = self.inner.lock().unwrap();
        if let Some((v, k)) = inner.vars.get(name) {
            if v.shape() != &shape || *k != kind {
                candle_core::bail!("parameter {name}: expected {shape:?} {kind:?}, store has {:?} {k:?}", v.shape());
            }
            return Ok(v.clone());
        }
        let n = shape.elem_count();
        let mut rng = stream(seed, Purpose::Init, name_hash(name), 0);
        let data: Vec<f32> = match init {
            Init::Const(c) => vec![c; n],
            Init::Normal(std) => {
                let d = Normal::new(0.0f32, std).map_err(candle_core::Error::wrap)?;
                (0..n).map(|_| d.sample(&mut rng)).collect()
            }
            Init::Uniform(b) => (0..n).map(|_| rng.random_range(-b..=b)).collect(),
        };
        let var = Var::from_tensor(&Tensor::from_vec(data, shape, &self.device)?)?;
        inner.vars.insert(name.to_string(), (var.clone(), kind));
        Ok(var)
    }

    /// Insert (or replace the value of) a tensor.
    pub fn set(&self, name: &str, value: &Tensor, kind: Kind) -> Result<()> {
        let mut inner = self.inner.lock().unwrap();
        match inner.vars.get(name) {
            Some((v, _)) => v.set(&value.to_dtype(DType::F32)?.to_device(&self.device)?),
            None => {
                let var = Var::from_tensor(&value.to_dtype(DType::F32)?.to_device(&self.device)?)?;
                inner.vars.insert(name.to_string(), (var, kind));
                Ok(())
            }
        }
    }

    /// Sorted `(name, var, kind)` list.
    pub fn entries(&self) -> Vec<(String, Var, Kind)> {
        self.inner
            .lock()
            .unwrap()
            .vars
            .iter()
            .map(|(n, (v, k))| (n.clone(), v.clone(), *k))
            .collect()
    }

    /// Sorted trainable `(name, var)` list.
    pub fn trainable(&self) -> Vec<(String, Var)> {
        self.entries()
            .into_iter()
            .filter(|e| e.2 == Kind::Trainable)
            .map(|(n, v, _)| (n, v))
            .collect()
    }

    /// Look up one tensor.
    pub fn get(&self, name: &str) -> Option<Var> {
        self.inner.lock().unwrap().vars.get(name).map(|(v, _)| v.clone())
    }

    /// A deep copy into a new store (fresh Vars with the same values).
    pub fn deep_copy(&self) -> Result<Self> {
        let out = Self::new(&self.device);
        for (n, v, k) in self.entries() {
            out.set(&n, &v.as_tensor().copy()?, k)?;
        }
        Ok(out)
    }

    /// Copy every value of `other` into this store's tensors of the same name.
    pub fn copy_from(&self, other: &ParamStore) -> Result<()> {
        for (n, v, _) in self.entries() {
            let src = other
                .get(&n)
                .ok_or_else(|| candle_core::Error::Msg(format!("copy_from: {n} missing in source")))?;
            v.set(&src.as_tensor().copy()?)?;
        }
        Ok(())
    }

    /// Number of trainable scalars.
    pub fn num_trainable(&self) -> usize {
        self.trainable().iter().map(|(_, v)| v.elem_count()).sum()
    }
}

fn name_hash(name: &str) -> u64 {
    // FNV-1a: stable across runs and platforms.
    name.bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}
