//! `moco eval knn|linear` and `moco embed`: the query encoder of a run or checkpoint, frozen.

use super::{parse_set, ExitCode, Features, Global, Protocol, Split};
use crate::config::{FeatureKind, Override};
use crate::data::{self, DataError};
use crate::device::make_device;
use crate::eval::features::extract;
use crate::eval::protocol::FEATURE_BATCH;
use crate::eval::{eval_input, knn_eval, linear_eval};
use crate::io::checkpoint::{Checkpoint, HostTensor};
use crate::io::run_dir::{check_output, RunDir, RunSummary};
use crate::model::load::encoder_from_checkpoint;
use crate::model::Encoder;
use crate::progress::bar;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Arguments of `moco eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// knn (weighted kNN, eval.knn_*) or linear (a linear classifier on the frozen backbone).
    pub protocol: Protocol,
    /// Run directory, checkpoint file, or hf://NAMESPACE/NAME[@REVISION].
    pub target: PathBuf,
    /// Override config keys (e.g. eval.linear.epochs=30, data.path=…).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
    pub set: Vec<Override>,
}

/// Arguments of `moco embed`.
#[derive(Debug, clap::Args)]
pub struct EmbedArgs {
    /// Checkpoint: a run's checkpoint.safetensors, an exported model.safetensors, or
    /// hf://NAMESPACE/NAME[@REVISION].
    pub checkpoint: PathBuf,
    /// Dataset: an ImageFolder root (with train/ and test/), a pack of shards, a CIFAR binary
    /// folder, or `builtin` for the synthetic dataset.
    #[arg(long)]
    pub data: String,
    /// Output file.
    #[arg(long)]
    pub out: PathBuf,
    /// Which split to embed.
    #[arg(long, default_value = "test")]
    pub split: Split,
    /// backbone: the pooled backbone output; head: the projection head's output.
    #[arg(long, default_value = "backbone")]
    pub features: Features,
    /// Only the first N images of the split (0 = all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    /// Also store the normalised network inputs as `inputs` (N, 3, H, W), to check the
    /// features in another framework (bench/torch_check_export.py).
    #[arg(long)]
    pub with_inputs: bool,
    /// Write --out even when it is the checkpoint read or a file of a run directory.
    #[arg(long)]
    pub force: bool,
}

/// A checkpoint's config (with `set`), its query encoder, and the dataset's splits.
fn load_encoder(ck_path: &Path, set: &[Override]) -> Result<(crate::config::ValidRunConfig, Encoder, data::Splits, candle_core::Device)> {
    let ck = Checkpoint::load_any(ck_path)?;
    let cfg = ck.run_config(ck_path, set)?;
    let device = make_device(&cfg.device)?;
    let encoder = encoder_from_checkpoint(&ck, ck_path, &cfg, &device)?;
    let splits = data::load(&cfg.data, cfg.seed).context("loading the dataset (data.*)")?;
    Ok((cfg, encoder, splits, device))
}

/// `moco eval`: print the top-1, and record it in the run's summary.json when given a run.
pub fn eval(a: EvalArgs, g: &Global) -> Result<ExitCode> {
    let set = g.with_device(a.set);
    let (ck_path, run_dir) = if a.target.is_dir() {
        (RunDir::new(&a.target).checkpoint(), Some(RunDir::new(&a.target)))
    } else {
        (crate::hub::resolve_checkpoint(&a.target)?, None)
    };
    let (cfg, encoder, splits, device) = load_encoder(&ck_path, &set)?;
    let acc = match a.protocol {
        Protocol::Knn => knn_eval(&encoder, &splits, &cfg, &device, true)?,
        Protocol::Linear => linear_eval(&encoder, &splits, &cfg, &device, true)?,
    };
    println!("{:?} top-1: {acc:.2}%", a.protocol);
    if let Some(rd) = run_dir {
        if let Ok(mut s) = RunSummary::load(&rd.summary()) {
            match a.protocol {
                Protocol::Knn => s.knn_top1 = Some(acc),
                Protocol::Linear => s.linear_top1 = Some(acc),
            }
            s.save(&rd.summary())?;
        }
    }
    Ok(ExitCode::Ok)
}

/// `moco embed`: features (and labels, optionally the inputs) of one split to safetensors.
pub fn embed(a: EmbedArgs, g: &Global) -> Result<ExitCode> {
    let checkpoint = crate::hub::resolve_checkpoint(&a.checkpoint)?;
    check_output(&a.out, &[&checkpoint], a.force)?;
    let (cfg, encoder, splits, device) = load_encoder(&checkpoint, &g.with_device(dataset_override(&a.data)?))?;
    let mut set = if a.split == Split::Train { splits.train } else { splits.test };
    set.truncate(a.limit);
    let kind = match a.features {
        Features::Backbone => FeatureKind::Backbone,
        Features::Head => FeatureKind::Head,
    };
    let input = eval_input(&cfg);
    let pb = bar(set.len() as u64, "embed".into(), true);
    let f = extract(&encoder, &set, input, kind, FEATURE_BATCH, &device, |n| pb.inc(n as u64))?;
    pb.finish_and_clear();
    let mut outck = Checkpoint::default();
    outck.tensors.insert("features".into(), HostTensor::from_tensor(&f, false)?);
    let labels = set.labels.iter().map(|&l| l as i64).collect();
    outck.tensors.insert("labels".into(), HostTensor::I64(vec![set.len()], labels));
    if a.with_inputs {
        let idx: Vec<usize> = (0..set.len()).collect();
        let x = crate::data::loader::eval_batch(&set, &idx, &input)?;
        let shape = vec![set.len(), 3, input.image_size, input.image_size];
        outck.tensors.insert("inputs".into(), HostTensor::F32(shape, x));
    }
    outck.metadata.insert("classes".into(), set.classes.join(","));
    outck.metadata.insert("checkpoint".into(), checkpoint.display().to_string());
    outck.save(&a.out)?;
    println!("wrote {} ({} × {})", a.out.display(), set.len(), f.dim(1)?);
    Ok(ExitCode::Ok)
}

/// The config keys that point a run at a dataset given on the command line (`--data`).
pub fn dataset_override(data: &str) -> Result<Vec<Override>> {
    if data == "builtin" {
        return Ok(vec![Override::string("data.source", "synthetic")]);
    }
    let p = Path::new(data);
    let source = if p.join("index.json").is_file() {
        "shards"
    } else if p.join("train").is_dir() {
        "image_folder"
    } else if p.join("data_batch_1.bin").exists() || p.join("train.bin").exists() {
        "cifar_bin"
    } else if p.join("train_X.bin").exists() {
        "stl10"
    } else {
        return Err(DataError::Layout {
            path: p.into(),
            message:
                "not an ImageFolder root (train/, test/), a pack of shards (index.json), a CIFAR binary folder nor an STL-10 binary folder"
                    .into(),
        }
        .into());
    };
    Ok(vec![Override::string("data.source", source), Override::string("data.path", data)])
}
