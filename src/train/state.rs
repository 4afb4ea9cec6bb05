//! A [`Learner`] to and from a [`Checkpoint`] (names in `io::checkpoint`'s doc): resume
//! restores everything, `--init` the weights (and the queue when its shape fits).

use super::learner::{Dictionary, Learner};
use crate::io::checkpoint::{Checkpoint, CheckpointError, HostTensor};
use crate::model::load::{store_from_checkpoint, store_to_checkpoint, wrap};
use std::path::Path;

/// Everything needed to continue a run.
pub fn learner_to_checkpoint(l: &Learner) -> candle_core::Result<Checkpoint> {
    let mut ck = Checkpoint::default();
    store_to_checkpoint(&l.q_store, "encoder_q.", &mut ck)?;
    match &l.dictionary {
        Dictionary::Queue { key_store, queue, .. } => {
            store_to_checkpoint(key_store, "encoder_k.", &mut ck)?;
            let keys = HostTensor::from_tensor(&queue.keys.t()?.contiguous()?, false)?; // (C, K)
            ck.tensors.insert("queue".into(), keys);
            ck.tensors
                .insert("queue_ptr".into(), HostTensor::I64(vec![1], vec![queue.ptr as i64]));
        }
        Dictionary::Bank(bank) => {
            ck.tensors
                .insert("memory_bank".into(), HostTensor::from_tensor(&bank.features, false)?);
        }
        Dictionary::EndToEnd => {}
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
    let device = l.device.clone();
    if let Some(q) = l.queue_mut() {
        let (k, c) = q.keys.dims2().map_err(wrap(path))?;
        let t = ck.get(path, "queue", Some(&[c, k]))?;
        q.keys = t.to_tensor(&device).and_then(|t| t.t()?.contiguous()).map_err(wrap(path))?;
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
    if let Some(k) = l.key_store() {
        store_from_checkpoint(k, "encoder_k.", ck, path)?;
    }
    load_queue(l, ck, path)?;
    let device = l.device.clone();
    if let Some(b) = l.bank_mut() {
        let t = ck.get(path, "memory_bank", Some(b.features.dims()))?;
        b.features = t.to_tensor(&device).map_err(wrap(path))?;
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
    if let Some(k) = l.key_store() {
        if ck.tensors.keys().any(|n| n.starts_with("encoder_k.")) {
            store_from_checkpoint(k, "encoder_k.", ck, path)?;
        } else {
            k.copy_from(&l.q_store).map_err(wrap(path))?;
            notes.push("no encoder_k in the checkpoint: key encoder copied from the query encoder".into());
        }
    }
    if let (Some(q), Some(t)) = (l.queue(), ck.tensors.get("queue")) {
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
