//! safetensors files holding named tensors plus string metadata, written atomically, loaded
//! strictly (missing and unexpected names are listed).
//!
//! A run checkpoint holds (official MoCo state-dict names where they exist):
//! `encoder_q.<torchvision name>`, `encoder_k.<…>` (moco), `queue (C, K)` and `queue_ptr (1,)`
//! i64 (moco), `memory_bank (N, C)` (memory_bank), `optimizer.momentum_buffer.<name>`; and in
//! `__metadata__`: `format = "pt"`, `epoch`, `step`, `seed`, `config` (TOML), `commit`.
//! BatchNorm `num_batches_tracked` tensors are i64 scalars, as in PyTorch.
//!
//! A published encoder (`model.safetensors`, see `hub::export`) holds the query encoder alone
//! without the prefix; [`Checkpoint::load_any`] reads both and renames the published one into
//! the run layout, so every command that takes a checkpoint takes either.

use super::atomic::write_atomic;
use crate::config::{apply_overrides, ConfigError, LoadError, Override, RunConfig, ValidRunConfig};
use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Errors reading or writing a checkpoint; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// File system.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Not a valid safetensors file.
    #[error("{path}: not a valid safetensors file: {message}")]
    Format {
        /// File.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// Tensor names do not match what is expected.
    #[error("{path}: tensor names do not match the model: missing {}, unexpected {}", names(.missing), names(.unexpected))]
    Keys {
        /// File.
        path: PathBuf,
        /// Expected but absent.
        missing: Vec<String>,
        /// Present but not expected.
        unexpected: Vec<String>,
    },
    /// A tensor with the wrong shape or dtype.
    #[error("{path}: tensor {name}: {message}")]
    Tensor {
        /// File.
        path: PathBuf,
        /// Tensor.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A candle error while converting.
    #[error("{path}: {source}")]
    Candle {
        /// File.
        path: PathBuf,
        /// Cause.
        source: candle_core::Error,
    },
    /// The run config in the metadata is missing, not TOML, or invalid with the overrides.
    #[error("{path}: {message}")]
    Config {
        /// File.
        path: PathBuf,
        /// What is wrong (names the key and value).
        message: String,
    },
}

/// Up to five names, then how many more (an error stays one readable line).
fn names(list: &[String]) -> String {
    match list.len() {
        0 => "none".into(),
        n if n <= 5 => format!("{list:?}"),
        n => format!("{:?} and {} more", &list[..5], n - 5),
    }
}

/// Prefix of the query encoder in a run checkpoint.
pub const Q_PREFIX: &str = "encoder_q.";
/// Metadata key marking a published encoder (value: the prefix it was taken from).
pub const EXPORT_MARK: &str = "moco_export";

/// A tensor on the host, f32 or i64.
#[derive(Debug, Clone, PartialEq)]
pub enum HostTensor {
    /// f32 data with its shape.
    F32(Vec<usize>, Vec<f32>),
    /// i64 data with its shape.
    I64(Vec<usize>, Vec<i64>),
}

impl HostTensor {
    /// Copy a candle tensor to the host (f32 unless `as_i64`).
    pub fn from_tensor(t: &Tensor, as_i64: bool) -> candle_core::Result<Self> {
        let shape = t.dims().to_vec();
        let flat = t.flatten_all()?;
        Ok(if as_i64 {
            Self::I64(
                shape,
                flat.to_dtype(DType::F32)?.to_vec1::<f32>()?.iter().map(|&v| v as i64).collect(),
            )
        } else {
            Self::F32(shape, flat.to_dtype(DType::F32)?.to_vec1::<f32>()?)
        })
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            Self::F32(s, _) | Self::I64(s, _) => s,
        }
    }

    /// As an f32 candle tensor on `device`.
    pub fn to_tensor(&self, device: &Device) -> candle_core::Result<Tensor> {
        match self {
            Self::F32(s, d) => Tensor::from_vec(d.clone(), s.clone(), device),
            Self::I64(s, d) => Tensor::from_vec(d.iter().map(|&v| v as f32).collect::<Vec<f32>>(), s.clone(), device),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        match self {
            Self::F32(_, d) => d.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Self::I64(_, d) => d.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
}

/// Named tensors plus metadata.
#[derive(Debug, Clone, Default)]
pub struct Checkpoint {
    /// Tensors by name (sorted).
    pub tensors: BTreeMap<String, HostTensor>,
    /// `__metadata__` strings.
    pub metadata: BTreeMap<String, String>,
}

impl Checkpoint {
    /// Serialize to safetensors bytes, deterministically: the same tensors and metadata give
    /// the same bytes (header keys sorted, data in name order; the `safetensors` crate takes the
    /// metadata as a `HashMap` and writes it in a per-process random order).
    pub fn to_bytes(&self) -> Result<Vec<u8>, String> {
        let mut header = serde_json::Map::new();
        if !self.metadata.is_empty() {
            let meta: serde_json::Map<String, serde_json::Value> = self
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            header.insert("__metadata__".into(), serde_json::Value::Object(meta));
        }
        let mut data = Vec::new();
        for (name, t) in &self.tensors {
            let b = t.bytes();
            let (dtype, width) = if matches!(t, HostTensor::F32(..)) { ("F32", 4) } else { ("I64", 8) };
            if b.len() != t.shape().iter().product::<usize>() * width {
                return Err(format!("tensor {name}: {} bytes for shape {:?}", b.len(), t.shape()));
            }
            header.insert(
                name.clone(),
                serde_json::json!({"dtype": dtype, "shape": t.shape(), "data_offsets": [data.len(), data.len() + b.len()]}),
            );
            data.extend_from_slice(&b);
        }
        let mut h = serde_json::to_vec(&serde_json::Value::Object(header)).map_err(|e| e.to_string())?;
        while h.len() % 8 != 0 {
            h.push(b' ');
        }
        let mut out = Vec::with_capacity(8 + h.len() + data.len());
        out.extend_from_slice(&(h.len() as u64).to_le_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(&data);
        Ok(out)
    }

    /// Write atomically.
    pub fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        let bytes = self.to_bytes().map_err(|message| CheckpointError::Format {
            path: path.into(),
            message,
        })?;
        write_atomic(path, &bytes).map_err(|source| CheckpointError::Io { path: path.into(), source })
    }

    /// Read a file (f32, f16/bf16/f64 converted to f32; i64/i32 kept as i64).
    pub fn load(path: &Path) -> Result<Self, CheckpointError> {
        let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io { path: path.into(), source })?;
        let fmt = |e: safetensors::SafeTensorError| CheckpointError::Format {
            path: path.into(),
            message: e.to_string(),
        };
        let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(fmt)?;
        let st = SafeTensors::deserialize(&bytes).map_err(fmt)?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let shape = view.shape().to_vec();
            let d = view.data();
            let t = match view.dtype() {
                Dtype::F32 => HostTensor::F32(
                    shape,
                    d.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
                ),
                Dtype::F64 => HostTensor::F32(
                    shape,
                    d.chunks_exact(8)
                        .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                        .collect(),
                ),
                Dtype::I64 => HostTensor::I64(
                    shape,
                    d.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect(),
                ),
                Dtype::I32 => HostTensor::I64(
                    shape,
                    d.chunks_exact(4)
                        .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                        .collect(),
                ),
                other => {
                    return Err(CheckpointError::Tensor {
                        path: path.into(),
                        name,
                        message: format!("unsupported dtype {other:?}"),
                    })
                }
            };
            tensors.insert(name, t);
        }
        let metadata = meta.metadata().clone().unwrap_or_default().into_iter().collect();
        Ok(Self { tensors, metadata })
    }

    /// Read a run checkpoint or a published encoder; the latter's tensors are renamed into the
    /// run layout (`encoder_q.*`, see [`Checkpoint::normalize_exported`]).
    pub fn load_any(path: &Path) -> Result<Self, CheckpointError> {
        let mut ck = Self::load(path)?;
        ck.normalize_exported();
        Ok(ck)
    }

    /// If this is a published encoder (no `encoder_q.` names), prefix every tensor with
    /// [`Q_PREFIX`].
    pub fn normalize_exported(&mut self) {
        if self.tensors.keys().any(|n| n.starts_with(Q_PREFIX)) {
            return;
        }
        let tensors = std::mem::take(&mut self.tensors);
        self.tensors = tensors.into_iter().map(|(n, t)| (format!("{Q_PREFIX}{n}"), t)).collect();
    }

    /// The run config stored in the metadata (`config`, TOML), with `overrides` applied and
    /// validated.
    pub fn run_config(&self, path: &Path, overrides: &[Override]) -> Result<ValidRunConfig, CheckpointError> {
        let err = |message: String| CheckpointError::Config {
            path: path.into(),
            message,
        };
        let text = self
            .metadata
            .get("config")
            .ok_or_else(|| err("no config in the checkpoint metadata".into()))?;
        let mut table: toml::Table = toml::from_str(text).map_err(|e| err(format!("config metadata is not TOML: {e}")))?;
        apply_overrides(&mut table, overrides).map_err(|e| err(LoadError::from(e).to_string()))?;
        let origin = crate::config::with_overrides(format!("{} (metadata)", path.display()), overrides);
        let cfg = RunConfig::from_table(table, &origin).map_err(|e| err(e.to_string()))?;
        cfg.validate().map_err(|e: ConfigError| err(format!("invalid config: {e}")))
    }

    /// Check that the names under `prefix` are exactly `expected`.
    pub fn check_keys(&self, path: &Path, prefix: &str, expected: &[String]) -> Result<(), CheckpointError> {
        let have: Vec<String> = self
            .tensors
            .keys()
            .filter_map(|k| k.strip_prefix(prefix).map(str::to_string))
            .collect();
        let missing: Vec<String> = expected
            .iter()
            .filter(|e| !have.contains(e))
            .map(|e| format!("{prefix}{e}"))
            .collect();
        let unexpected: Vec<String> = have
            .iter()
            .filter(|h| !expected.contains(h))
            .map(|h| format!("{prefix}{h}"))
            .collect();
        if missing.is_empty() && unexpected.is_empty() {
            Ok(())
        } else {
            Err(CheckpointError::Keys {
                path: path.into(),
                missing,
                unexpected,
            })
        }
    }

    /// A tensor that must exist with a given shape.
    pub fn get(&self, path: &Path, name: &str, shape: Option<&[usize]>) -> Result<&HostTensor, CheckpointError> {
        let t = self.tensors.get(name).ok_or_else(|| CheckpointError::Keys {
            path: path.into(),
            missing: vec![name.into()],
            unexpected: vec![],
        })?;
        if let Some(s) = shape {
            if t.shape() != s {
                return Err(CheckpointError::Tensor {
                    path: path.into(),
                    name: name.into(),
                    message: format!("shape {:?}, expected {s:?}", t.shape()),
                });
            }
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_metadata_and_strict_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.safetensors");
        let mut c = Checkpoint::default();
        c.tensors
            .insert("encoder_q.a".into(), HostTensor::F32(vec![2, 2], vec![1., 2., 3., 4.]));
        c.tensors.insert("queue_ptr".into(), HostTensor::I64(vec![1], vec![7]));
        c.metadata.insert("epoch".into(), "3".into());
        c.save(&p).unwrap();
        let d = Checkpoint::load(&p).unwrap();
        assert_eq!(d.tensors, c.tensors);
        assert_eq!(d.metadata["epoch"], "3");
        // Deterministic bytes, and the same as a reload re-saved (what the Hub round trip relies on).
        assert_eq!(c.to_bytes().unwrap(), d.to_bytes().unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), c.to_bytes().unwrap());
        assert!(d.check_keys(&p, "encoder_q.", &["a".into()]).is_ok());
        match d.check_keys(&p, "encoder_q.", &["b".into()]) {
            Err(CheckpointError::Keys { missing, unexpected, .. }) => {
                assert_eq!(missing, vec!["encoder_q.b"]);
                assert_eq!(unexpected, vec!["encoder_q.a"]);
            }
            other => panic!("{other:?}"),
        }
        std::fs::write(&p, b"garbage").unwrap();
        assert!(matches!(Checkpoint::load(&p), Err(CheckpointError::Format { .. })));
    }
}
