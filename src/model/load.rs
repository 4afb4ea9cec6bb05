//! Encoders to and from checkpoints: a parameter store under a name prefix (strict: missing
//! and unexpected names listed, shapes checked), and the query encoder of any checkpoint that
//! `moco eval`, `moco embed` and `--init` read.

use super::{Encoder, ParamStore};
use crate::config::ValidRunConfig;
use crate::io::checkpoint::{Checkpoint, CheckpointError, HostTensor, Q_PREFIX};
use candle_core::Device;
use std::path::Path;

/// A candle error while reading `path`, as a [`CheckpointError`].
pub fn wrap(path: &Path) -> impl Fn(candle_core::Error) -> CheckpointError + '_ {
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
        let full = format!("{prefix}{name}");
        let t = ck.get(path, &full, Some(var.dims()))?;
        if let HostTensor::F32(_, v) = t {
            if let Some(bad) = v.iter().find(|x| !x.is_finite()) {
                return Err(CheckpointError::Tensor {
                    path: path.into(),
                    name: full,
                    message: format!("holds non-finite values ({bad}); the weights are unusable"),
                });
            }
        }
        store
            .set(&name, &t.to_tensor(store.device()).map_err(wrap(path))?, kind)
            .map_err(wrap(path))?;
    }
    Ok(())
}

/// Build the query encoder of a checkpoint, strictly as `--init` does: every tensor the
/// model needs, with its shape, finite, and no tensor under `encoder_q.` that it does not need.
pub fn encoder_from_checkpoint(ck: &Checkpoint, path: &Path, cfg: &ValidRunConfig, device: &Device) -> Result<Encoder, CheckpointError> {
    let store = ParamStore::new(device);
    let enc = Encoder::new(&cfg.model, &store, cfg.seed).map_err(wrap(path))?;
    store_from_checkpoint(&store, Q_PREFIX, ck, path)?;
    Ok(enc)
}
