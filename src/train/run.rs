//! The epoch loop of `moco train`: input pipeline, steps, kNN monitor, metrics, checkpoints,
//! summary; resume and init. Nothing already written is lost when a run is killed: every file
//! is replaced atomically, metrics rows are written before the checkpoint of their epoch, and
//! a resume drops rows past the checkpoint and replays from there (all random streams are
//! functions of (seed, epoch, step), so the replay is the same run).

use super::learner::Learner;
use crate::nn::schedule::{base_lr, lr_at};
use super::state::{learner_from_checkpoint, learner_init_from, learner_to_checkpoint};
use crate::config::{parse_device, DeviceRequest, DictionaryMode, ValidRunConfig};
use crate::data::augment::AugmentParams;
use crate::data::loader::{epoch_order, EpochLoader, PipelineSpec};
use crate::data::{self, ImageSet, Splits};
use crate::eval::features::{extract, EvalInput};
use crate::eval::knn::knn_top1;
use crate::eval::linear::linear_protocol;
use crate::io::checkpoint::Checkpoint;
use crate::io::run_dir::{git_commit, read_metrics, write_metrics, EpochMetrics, RunDir, RunStatus, RunSummary};
use crate::model::Encoder;
use crate::rng::{stream, Purpose};
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// How `moco train` was asked to start.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Continue from `RUN_DIR/checkpoint.safetensors`.
    pub resume: bool,
    /// Start from these weights (and queue, if present).
    pub init: Option<PathBuf>,
    /// Also measure kNN of the encoder at initialisation (the baseline to beat).
    pub knn_at_init: bool,
    /// Draw progress bars (they hide themselves when stderr is not a terminal).
    pub progress: bool,
}

/// The device a config asks for.
pub fn make_device(spec: &str) -> Result<Device> {
    // candle's errors carry a backtrace in their Display; the first line is the message.
    let first_line = |e: candle_core::Error| e.to_string().lines().next().unwrap_or_default().to_string();
    Ok(match parse_device(spec)? {
        DeviceRequest::Cpu => Device::Cpu,
        DeviceRequest::Cuda(_) if !cfg!(feature = "cuda") => {
            anyhow::bail!("device = {spec:?}: this binary is built without CUDA (cargo build --release --features cuda)")
        }
        DeviceRequest::Cuda(n) => {
            Device::new_cuda(n).map_err(|e| anyhow::anyhow!("device = {spec:?}: no usable CUDA device {n}: {}", first_line(e)))?
        }
        DeviceRequest::Auto if cfg!(feature = "cuda") => match Device::new_cuda(0) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("device = \"auto\": no usable CUDA device ({}); using the CPU", first_line(e));
                Device::Cpu
            }
        },
        DeviceRequest::Auto => Device::Cpu,
    })
}

/// Human-readable device name for results.
pub fn describe_device(d: &Device) -> String {
    match d {
        Device::Cpu => format!("cpu ({} threads)", rayon::current_num_threads()),
        Device::Cuda(_) => "cuda".into(),
        Device::Metal(_) => "metal".into(),
    }
}

pub(crate) fn bar(len: u64, prefix: String, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_prefix(prefix);
    pb
}

/// Input of the evaluation transform for a config.
pub fn eval_input(cfg: &ValidRunConfig) -> EvalInput {
    EvalInput {
        image_size: cfg.data.image_size,
        mean: cfg.data.mean.map(|v| v as f32),
        std: cfg.data.std.map(|v| v as f32),
    }
}

/// Weighted kNN top-1 (%) of `encoder` with train features as the memory and test as queries.
pub fn knn_eval(encoder: &Encoder, splits: &Splits, cfg: &ValidRunConfig, device: &Device, show: bool) -> Result<f64> {
    let input = eval_input(cfg);
    let pb = bar((splits.train.len() + splits.test.len()) as u64, "kNN".into(), show);
    let train = extract(encoder, &splits.train, input, cfg.eval.knn_features, 256, device, |n| {
        pb.inc(n as u64)
    })?;
    let test = extract(encoder, &splits.test, input, cfg.eval.knn_features, 256, device, |n| {
        pb.inc(n as u64)
    })?;
    pb.finish_and_clear();
    let classes = splits.train.classes.len();
    Ok(knn_top1(
        &train,
        &splits.train.labels,
        &test,
        &splits.test.labels,
        classes,
        cfg.eval.knn_k,
        cfg.eval.knn_t,
    )?)
}

/// Linear-protocol top-1 (%).
pub fn linear_eval(encoder: &Encoder, splits: &Splits, cfg: &ValidRunConfig, device: &Device, show: bool) -> Result<f64> {
    let pb = bar(cfg.eval.linear.epochs as u64, "linear".into(), show);
    let r = linear_protocol(
        encoder,
        &splits.train,
        &splits.test,
        eval_input(cfg),
        &cfg.eval.linear,
        cfg.seed,
        device,
        |e, loss| {
            pb.set_position(e as u64);
            pb.set_message(format!("loss {loss:.3}"));
        },
    )?;
    pb.finish_and_clear();
    Ok(r.top1)
}

fn batch_tensor(v: Vec<f32>, n: usize, size: usize, device: &Device) -> Result<Tensor> {
    Ok(Tensor::from_vec(v, (n, 3, size, size), device)?)
}

/// Train (or resume) the run in `dir`. Writes `config.toml` (fresh runs), `metrics.csv`,
/// `checkpoint.safetensors` each epoch and `summary.json` at the end. A diverged run returns
/// `Ok` with status `diverged`; any error is recorded as `failed` in `summary.json` and returned.
pub fn train(cfg: &ValidRunConfig, dir: &RunDir, opts: &TrainOptions) -> Result<RunSummary> {
    let started = Instant::now();
    std::fs::create_dir_all(&dir.root).with_context(|| format!("creating run directory {}", dir.root.display()))?;
    let device = make_device(&cfg.device)?;
    let mut summary = RunSummary {
        status: RunStatus::Failed,
        mode: cfg.dictionary.mode.as_str().into(),
        negatives: 0,
        epochs: 0,
        steps: 0,
        final_loss: None,
        knn_top1: None,
        linear_top1: None,
        knn_top1_at_init: None,
        images_per_s: 0.0,
        wall_s: 0.0,
        device: describe_device(&device),
        commit: git_commit(),
        message: None,
    };
    let result = train_inner(cfg, dir, opts, &device, &mut summary, started);
    summary.wall_s = started.elapsed().as_secs_f64();
    if let Err(e) = &result {
        summary.status = RunStatus::Failed;
        summary.message = Some(format!("{e:#}"));
    }
    summary.save(&dir.summary()).map_err(anyhow::Error::msg)?;
    result.map(|_| summary)
}

fn train_inner(
    cfg: &ValidRunConfig,
    dir: &RunDir,
    opts: &TrainOptions,
    device: &Device,
    summary: &mut RunSummary,
    started: Instant,
) -> Result<()> {
    let show = opts.progress;
    if !opts.resume {
        crate::io::atomic::write_atomic(&dir.config(), cfg.to_toml().as_bytes())
            .with_context(|| format!("writing {}", dir.config().display()))?;
    }
    let t0 = Instant::now();
    let splits = data::load(&cfg.data, cfg.seed).with_context(|| "loading the dataset (data.*)".to_string())?;
    let pretrain = data::pretrain_set(&cfg.data, &splits).context("loading the pre-training images (data.pretrain_split)")?;
    eprintln!(
        "data: {} train / {} test images, {} classes; pre-training on {} images ({:.1}s)",
        splits.train.len(),
        splits.test.len(),
        splits.train.classes.len(),
        pretrain.len(),
        t0.elapsed().as_secs_f64()
    );
    let n = pretrain.len();
    let batch = cfg.train.batch_size;
    let steps_per_epoch = n / batch;
    if steps_per_epoch == 0 {
        bail!("train.batch_size ({batch}) exceeds the number of training images ({n})");
    }
    if cfg.dictionary.mode == DictionaryMode::MemoryBank && cfg.dictionary.size > n {
        bail!(
            "dictionary.size ({}) exceeds the number of training images ({n}) in memory_bank mode",
            cfg.dictionary.size
        );
    }
    let mut learner = Learner::new(cfg, n, device)?;
    summary.negatives = learner.negatives();
    let mut rows: Vec<EpochMetrics> = Vec::new();
    let mut start_epoch = 0;
    let mut first_batch = 0;
    let mut step = 0;
    let ck_path = dir.checkpoint();
    if opts.resume && ck_path.exists() {
        let ck = Checkpoint::load(&ck_path)?;
        learner_from_checkpoint(&mut learner, &ck, &ck_path)?;
        step = ck
            .metadata
            .get("step")
            .and_then(|v| v.parse().ok())
            .context("checkpoint has no step in its metadata")?;
        // Position from the step count: a run stopped mid-epoch by train.max_steps continues
        // inside that epoch (its partial metrics row is dropped and redone for the rest).
        start_epoch = step / steps_per_epoch;
        first_batch = step % steps_per_epoch;
        rows = read_metrics(&dir.metrics()).map_err(anyhow::Error::msg)?;
        rows.retain(|r| r.epoch <= start_epoch);
        summary.knn_top1_at_init = ck.metadata.get("knn_top1_at_init").and_then(|v| v.parse().ok());
        eprintln!("resuming {} at epoch {start_epoch} (step {step})", dir.root.display());
    } else if opts.resume {
        eprintln!("resuming {}: no checkpoint yet, starting from the beginning", dir.root.display());
    } else if let Some(init) = &opts.init {
        let ck = crate::hub::load_checkpoint(init)?;
        for note in learner_init_from(&mut learner, &ck, init)? {
            eprintln!("init: {note}");
        }
    }
    write_metrics(&dir.metrics(), &rows).map_err(anyhow::Error::msg)?;
    if opts.knn_at_init && summary.knn_top1_at_init.is_none() && start_epoch == 0 {
        let acc = knn_eval(&learner.encoder_q, &splits, cfg, device, show)?;
        eprintln!("kNN top-1 at initialisation: {acc:.2}%");
        summary.knn_top1_at_init = Some(acc);
    }

    let max_steps = cfg.train.max_steps.unwrap_or(usize::MAX).min(cfg.train.epochs * steps_per_epoch);
    let spec = Arc::new(PipelineSpec {
        params: AugmentParams::resolve(&cfg.augment),
        image_size: cfg.data.image_size,
        mean: cfg.data.mean.map(|v| v as f32),
        std: cfg.data.std.map(|v| v as f32),
        views: learner.views(),
        seed: cfg.seed,
    });
    let workers = if cfg.data.workers == 0 { num_threads() } else { cfg.data.workers };
    let pool = Arc::new(rayon::ThreadPoolBuilder::new().num_threads(workers).build()?);
    let train_set: Arc<ImageSet> = Arc::new(pretrain);
    let lr0 = base_lr(&cfg.train);
    let size = cfg.data.image_size;
    let mut wall = rows.last().map(|r| r.wall_s).unwrap_or(0.0);

    for epoch in start_epoch..cfg.train.epochs {
        if step >= max_steps {
            break;
        }
        let order = epoch_order(n, cfg.seed, epoch as u64, cfg.data.shuffle);
        let first = if epoch == start_epoch { first_batch } else { 0 };
        let n_batches = steps_per_epoch.min(first + (max_steps - step));
        let mut loader = EpochLoader::spawn(
            train_set.clone(),
            order,
            batch,
            first,
            n_batches,
            epoch as u64,
            spec.clone(),
            cfg.data.prefetch,
            pool.clone(),
        );
        let pb = bar(
            (n_batches - first) as u64,
            format!("epoch {}/{}", epoch + 1, cfg.train.epochs),
            show,
        );
        let t_epoch = Instant::now();
        let (mut loss_sum, mut acc_sum, mut count, mut lr) = (0.0f64, 0.0f64, 0usize, lr0);
        while let Some(b) = loader.next_batch() {
            lr = lr_at(
                cfg.train.schedule,
                lr0,
                step as f64 / steps_per_epoch as f64,
                cfg.train.epochs,
                &cfg.train.milestones,
                cfg.train.warmup_epochs,
            );
            let views = b
                .views
                .into_iter()
                .map(|v| batch_tensor(v, b.len, size, device))
                .collect::<Result<Vec<_>>>()?;
            let choices = learner.draw_choices(b.len, &mut stream(cfg.seed, Purpose::Step, step as u64, 0));
            let stats = learner.step(&views, &b.indices, lr, &choices)?;
            step += 1;
            if !stats.loss.is_finite() {
                let msg = format!("loss became {} at step {step} (epoch {}); run stopped", stats.loss, epoch + 1);
                pb.abandon_with_message(msg.clone());
                wall += t_epoch.elapsed().as_secs_f64();
                rows.push(EpochMetrics {
                    epoch: epoch + 1,
                    step,
                    lr,
                    loss: stats.loss as f64,
                    contrast_acc1: f64::NAN,
                    knn_top1: None,
                    images_per_s: 0.0,
                    wall_s: wall,
                });
                write_metrics(&dir.metrics(), &rows).map_err(anyhow::Error::msg)?;
                summary.status = RunStatus::Diverged;
                summary.message = Some(msg.clone());
                summary.steps = step;
                summary.epochs = epoch;
                summary.final_loss = Some(stats.loss as f64);
                eprintln!("diverged: {msg}");
                return Ok(());
            }
            loss_sum += stats.loss as f64;
            acc_sum += stats.contrast_acc1 as f64;
            count += 1;
            pb.inc(1);
            let el = t_epoch.elapsed().as_secs_f64();
            pb.set_message(format!(
                "loss {:.4} acc {:.1}% {:.1} img/s",
                loss_sum / count as f64,
                100.0 * acc_sum / count as f64,
                (count * batch) as f64 / el
            ));
        }
        drop(loader);
        let train_s = t_epoch.elapsed().as_secs_f64();
        pb.finish_and_clear();
        wall += train_s;
        let last = epoch + 1 == cfg.train.epochs || step >= max_steps;
        let knn_due = (cfg.eval.knn_every > 0 && (epoch + 1) % cfg.eval.knn_every == 0) || last;
        let knn = if knn_due {
            Some(knn_eval(&learner.encoder_q, &splits, cfg, device, show)?)
        } else {
            None
        };
        let row = EpochMetrics {
            epoch: epoch + 1,
            step,
            lr,
            loss: loss_sum / count.max(1) as f64,
            contrast_acc1: acc_sum / count.max(1) as f64,
            knn_top1: knn,
            images_per_s: (count * batch) as f64 / train_s.max(1e-9),
            wall_s: wall,
        };
        eprintln!(
            "epoch {:>3}/{}  step {step}  lr {:.4}  loss {:.4}  contrast_acc1 {:.3}  {}{:.1} img/s",
            row.epoch,
            cfg.train.epochs,
            row.lr,
            row.loss,
            row.contrast_acc1,
            knn.map(|k| format!("knn_top1 {k:.2}%  ")).unwrap_or_default(),
            row.images_per_s
        );
        rows.push(row);
        // Row first, then the checkpoint: a kill in between replays this epoch on resume.
        write_metrics(&dir.metrics(), &rows).map_err(anyhow::Error::msg)?;
        let mut ck = learner_to_checkpoint(&learner)?;
        ck.metadata.insert("epoch".into(), (epoch + 1).to_string());
        ck.metadata.insert("step".into(), step.to_string());
        ck.metadata.insert("commit".into(), summary.commit.clone());
        if let Some(k) = summary.knn_top1_at_init {
            ck.metadata.insert("knn_top1_at_init".into(), k.to_string());
        }
        ck.save(&ck_path)?;
    }
    let last = rows.last();
    summary.epochs = last.map(|r| r.epoch).unwrap_or(0);
    summary.steps = step;
    summary.final_loss = last.map(|r| r.loss);
    summary.knn_top1 = match last.and_then(|r| r.knn_top1) {
        Some(k) => Some(k),
        None => Some(knn_eval(&learner.encoder_q, &splits, cfg, device, show)?),
    };
    if cfg.eval.linear_at_end {
        let acc = linear_eval(&learner.encoder_q, &splits, cfg, device, show)?;
        eprintln!("linear top-1: {acc:.2}%");
        summary.linear_top1 = Some(acc);
    }
    let ips: Vec<f64> = rows.iter().map(|r| r.images_per_s).filter(|v| *v > 0.0).collect();
    summary.images_per_s = ips.iter().sum::<f64>() / ips.len().max(1) as f64;
    summary.status = RunStatus::Ok;
    eprintln!(
        "done in {:.1}s: kNN top-1 {:.2}%",
        started.elapsed().as_secs_f64(),
        summary.knn_top1.unwrap_or(f64::NAN)
    );
    Ok(())
}

fn num_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
