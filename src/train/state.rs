//! A [`Learner`] to and from a [`Checkpoint`] (names in `io::checkpoint`'s doc).

use super::Learner;
use crate::io::checkpoint::{Checkpoint, CheckpointError, HostTensor};
use crate::model::{Kind, ParamStore};
use candle_core::Tensor;
use std::path::Path;

fn wrap(path: &Path) -> impl Fn(candle_core::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Candle { path: path.into(), source }
}

/// Write a store's tensors under `prefix` (BN `num_batches_tracked` as i64, as PyTorch).
pub fn store_to_checkpoint(store: &ParamStore, prefix: &str, ck: &mut Checkpoint) -> candle_core::Result<()> {
    for (name, var, _) in store.entries() {
        let as_i64 = name.ends_with("num_batches_tracked");
        ck.tensors
            .insert(format!("{prefix}{name}"), HostTensor::from_tensor(var.as_tensor(), as_i64)?);
    }
    Ok(())
}

/// Load every tensor of `store` from `prefix`, strictly (missing/unexpected names listed).
pub fn store_from_checkpoint(store: &ParamStore, prefix: &str, ck: &Checkpoint, path: &Path) -> Result<(), CheckpointError> {
    let entries = store.entries();
    let names: Vec<String> = entries.iter().map(|e| e.0.clone()).collect();
    ck.check_keys(path, prefix, &names)?;
    for (name, var, kind) in entries {
        let t = ck.get(path, &format!("{prefix}{name}"), Some(var.dims()))?;
        store
            .set(&name, &t.to_tensor(store.device()).map_err(wrap(path))?, kind)
            .map_err(wrap(path))?;
    }
    Ok(())
}

/// Everything needed to continue a run.
pub fn learner_to_checkpoint(l: &Learner) -> candle_core::Result<Checkpoint> {
    let mut ck = Checkpoint::default();
    store_to_checkpoint(&l.q_store, "encoder_q.", &mut ck)?;
    if let Some((k, _)) = &l.key {
        store_to_checkpoint(k, "encoder_k.", &mut ck)?;
    }
    if let Some(q) = &l.queue {
        ck.tensors
            .insert("queue".into(), HostTensor::from_tensor(&q.keys.t()?.contiguous()?, false)?); // (C, K)
        ck.tensors.insert("queue_ptr".into(), HostTensor::I64(vec![1], vec![q.ptr as i64]));
    }
    if let Some(b) = &l.bank {
        ck.tensors
            .insert("memory_bank".into(), HostTensor::from_tensor(&b.features, false)?);
    }
    for (name, buf) in &l.optim.buffers {
        ck.tensors
            .insert(format!("optimizer.momentum_buffer.{name}"), HostTensor::from_tensor(buf, false)?);
    }
    ck.metadata.insert("format".into(), "pt".into());
    ck.metadata.insert("mode".into(), l.cfg.dictionary.mode.as_str().into());
    ck.metadata.insert("config".into(), l.cfg.to_toml());
    ck.metadata.insert("seed".into(), l.cfg.seed.to_string());
    Ok(ck)
}

fn load_queue(l: &mut Learner, ck: &Checkpoint, path: &Path) -> Result<(), CheckpointError> {
    if let Some(q) = l.queue.as_mut() {
        let (k, c) = q.keys.dims2().map_err(wrap(path))?;
        let t = ck.get(path, "queue", Some(&[c, k]))?;
        q.keys = t.to_tensor(&l.device).and_then(|t| t.t()?.contiguous()).map_err(wrap(path))?;
        q.ptr = match ck.get(path, "queue_ptr", Some(&[1]))? {
            HostTensor::I64(_, v) => v[0] as usize,
            HostTensor::F32(_, v) => v[0] as usize,
        };
        if q.ptr >= k {
            return Err(CheckpointError::Tensor {
                path: path.into(),
                name: "queue_ptr".into(),
                message: format!("{} >= K = {k}", q.ptr),
            });
        }
    }
    Ok(())
}

/// Restore the full state written by [`learner_to_checkpoint`] (resume).
pub fn learner_from_checkpoint(l: &mut Learner, ck: &Checkpoint, path: &Path) -> Result<(), CheckpointError> {
    store_from_checkpoint(&l.q_store, "encoder_q.", ck, path)?;
    if let Some((k, _)) = &l.key {
        store_from_checkpoint(k, "encoder_k.", ck, path)?;
    }
    load_queue(l, ck, path)?;
    if let Some(b) = l.bank.as_mut() {
        let t = ck.get(path, "memory_bank", Some(b.features.dims()))?;
        b.features = t.to_tensor(&l.device).map_err(wrap(path))?;
    }
    l.optim.buffers.clear();
    for (name, var) in l.q_store.trainable() {
        if let Some(t) = ck.tensors.get(&format!("optimizer.momentum_buffer.{name}")) {
            if t.shape() != var.dims() {
                return Err(CheckpointError::Tensor {
                    path: path.into(),
                    name,
                    message: "momentum buffer shape".into(),
                });
            }
            l.optim.buffers.insert(name, t.to_tensor(&l.device).map_err(wrap(path))?);
        }
    }
    Ok(())
}

/// `--init`: weights of the query encoder (strict), the key encoder if present (else a copy
/// of the query encoder) and the queue if present with the same shape.
pub fn learner_init_from(l: &mut Learner, ck: &Checkpoint, path: &Path) -> Result<Vec<String>, CheckpointError> {
    let mut notes = Vec::new();
    store_from_checkpoint(&l.q_store, "encoder_q.", ck, path)?;
    if let Some((k, _)) = &l.key {
        if ck.tensors.keys().any(|n| n.starts_with("encoder_k.")) {
            store_from_checkpoint(k, "encoder_k.", ck, path)?;
        } else {
            k.copy_from(&l.q_store).map_err(wrap(path))?;
            notes.push("no encoder_k in the checkpoint: key encoder copied from the query encoder".into());
        }
    }
    if let (Some(q), Some(t)) = (l.queue.as_ref(), ck.tensors.get("queue")) {
        let (k, c) = q.keys.dims2().map_err(wrap(path))?;
        if t.shape() == [c, k] {
            load_queue(l, ck, path)?;
            notes.push("queue loaded from the checkpoint".into());
        } else {
            notes.push(format!(
                "queue in the checkpoint is {:?}, this run's is [{c}, {k}]: starting from a random queue",
                t.shape()
            ));
        }
    }
    Ok(notes)
}

/// Fresh store holding `prefix`-named tensors of a checkpoint (for eval/embed), kinds by name.
pub fn store_from_prefix(ck: &Checkpoint, prefix: &str, device: &candle_core::Device) -> candle_core::Result<ParamStore> {
    let store = ParamStore::new(device);
    for (name, t) in &ck.tensors {
        if let Some(n) = name.strip_prefix(prefix) {
            let kind = if n.ends_with("running_mean") || n.ends_with("running_var") || n.ends_with("num_batches_tracked") {
                Kind::Buffer
            } else {
                Kind::Trainable
            };
            let tensor: Tensor = t.to_tensor(device)?;
            store.set(n, &tensor, kind)?;
        }
    }
    Ok(store)
}
