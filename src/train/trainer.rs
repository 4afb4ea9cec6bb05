//! The epoch loop of `moco train`: the input pipeline feeds the learner's steps; after each
//! epoch the kNN monitor (when due), a metrics row and a checkpoint; at the end the summary.
//! Nothing already written is lost when a run is killed: every file is replaced atomically,
//! metrics rows are written before the checkpoint of their epoch, and a resume drops rows past
//! the checkpoint and replays from there ([`super::start`]).

use super::learner::Learner;
use super::record::{push_row, save_checkpoint, summarize, EpochSums};
use super::start::{start, Start};
use super::TrainError;
use crate::config::{check_train_images, ValidRunConfig};
use crate::data::augment::AugmentParams;
use crate::data::loader::{train_order, worker_count, EpochLoader, PipelineSpec};
use crate::data::sample::Output;
use crate::data::{self, ImageSet, Splits};
use crate::device::{describe_device, make_device};
use crate::eval::{knn_eval, linear_eval};
use crate::io::atomic::write_atomic;
use crate::io::run_dir::{git_commit, read_metrics, write_metrics, EpochMetrics, RunDir, RunStatus, RunSummary};
use crate::nn::schedule::{base_lr, key_momentum, lr_at};
use crate::progress::bar;
use crate::rng::{stream, Purpose};
use candle_core::{Device, Tensor};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// How `moco train` was asked to start.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Continue from `RUN_DIR/checkpoint.safetensors`.
    pub resume: bool,
    /// Start from these weights (and queue, if present): a local file.
    pub init: Option<PathBuf>,
    /// Also measure kNN of the encoder at initialisation (the baseline to beat).
    pub knn_at_init: bool,
    /// Draw progress bars (they hide themselves when stderr is not a terminal).
    pub progress: bool,
}

/// Train (or resume) the run in `dir`. Writes `config.toml` (fresh runs), `metrics.csv`,
/// `checkpoint.safetensors` each epoch and `summary.json` at the end. A diverged run returns
/// `Ok` with status `diverged`; any error is recorded as `failed` in `summary.json` and returned.
pub fn train(cfg: &ValidRunConfig, dir: &RunDir, opts: &TrainOptions) -> Result<RunSummary, TrainError> {
    let started = Instant::now();
    std::fs::create_dir_all(&dir.root).map_err(|source| TrainError::Io {
        path: dir.root.clone(),
        source,
    })?;
    let _lock = dir.lock()?; // one writer per run directory, until this function returns
    dir.remove_stale_temporaries();
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
        skipped_files: Vec::new(),
    };
    let mut prior_wall = 0.0;
    let result = Trainer::new(cfg, dir, opts, device).and_then(|mut t| {
        prior_wall = t.start.wall_s;
        let r = t.run(&mut summary, started);
        summary.skipped_files = t.spec.skipped_files().iter().map(|p| p.display().to_string()).collect();
        r
    });
    summary.wall_s = prior_wall + started.elapsed().as_secs_f64();
    if let Err(e) = &result {
        // What the run directory holds so far: the epochs and steps of its metrics rows.
        if let Ok(rows) = read_metrics(&dir.metrics()) {
            summarize(&mut summary, &rows, rows.last().map(|r| r.step).unwrap_or(0), None);
        }
        summary.status = RunStatus::Failed;
        summary.message = Some(e.to_string());
    }
    summary.save(&dir.summary())?;
    result.map(|_| summary)
}

/// How an epoch's steps ended.
enum EpochEnd {
    /// Every step ran: the sums and the last lr.
    Done(EpochSums, f64),
    /// The loss became non-finite at the current step.
    Diverged {
        /// The loss.
        loss: f32,
        /// lr of that step.
        lr: f64,
    },
}

/// One run in progress.
struct Trainer<'a> {
    cfg: &'a ValidRunConfig,
    dir: &'a RunDir,
    show: bool,
    knn_at_init: bool,
    device: Device,
    splits: Splits,
    train_set: Arc<ImageSet>,
    learner: Learner,
    spec: Arc<PipelineSpec>,
    pool: Arc<rayon::ThreadPool>,
    steps_per_epoch: usize,
    max_steps: usize,
    lr0: f64,
    start: Start,
}

impl<'a> Trainer<'a> {
    /// Write config.toml (fresh runs), read the data, build the learner, and place it where
    /// the run starts.
    fn new(cfg: &'a ValidRunConfig, dir: &'a RunDir, opts: &TrainOptions, device: Device) -> Result<Self, TrainError> {
        if !opts.resume {
            write_atomic(&dir.config(), cfg.to_toml().as_bytes()).map_err(|source| TrainError::Io {
                path: dir.config(),
                source,
            })?;
        }
        let t0 = Instant::now();
        let splits = data::load(&cfg.data, cfg.seed).map_err(TrainError::Data)?;
        let pretrain = data::pretrain_set(&cfg.data, &splits).map_err(TrainError::Pretrain)?;
        eprintln!(
            "data: {} train / {} test images, {} classes; pre-training on {} images ({:.1}s)",
            splits.train.len(),
            splits.test.len(),
            splits.train.classes.len(),
            pretrain.len(),
            t0.elapsed().as_secs_f64()
        );
        if let Some(note) = &splits.note {
            eprintln!("data: {note}");
        }
        let n = pretrain.len();
        check_train_images(cfg, n)?;
        let steps_per_epoch = n / cfg.train.batch_size;
        let mut learner = Learner::new(cfg, n, &device)?;
        let start = start(&mut learner, dir, opts, steps_per_epoch)?;
        let spec = Arc::new(PipelineSpec::new(
            AugmentParams::resolve(&cfg.augment),
            Output::of(&cfg.data),
            learner.views(),
            cfg.seed,
        ));
        let workers = worker_count(cfg.data.workers);
        Ok(Self {
            cfg,
            dir,
            show: opts.progress,
            knn_at_init: opts.knn_at_init || cfg.eval.knn_at_init,
            device,
            splits,
            train_set: Arc::new(pretrain),
            learner,
            spec,
            pool: Arc::new(rayon::ThreadPoolBuilder::new().num_threads(workers).build()?),
            steps_per_epoch,
            max_steps: cfg.train.max_steps.unwrap_or(usize::MAX).min(cfg.train.epochs * steps_per_epoch),
            lr0: base_lr(&cfg.train),
            start,
        })
    }

    fn knn(&self) -> Result<f64, TrainError> {
        Ok(knn_eval(&self.learner.encoder_q, &self.splits, self.cfg, &self.device, self.show)?)
    }

    /// Every epoch from the start to the end (or to a divergence), then the final evaluation.
    fn run(&mut self, summary: &mut RunSummary, started: Instant) -> Result<(), TrainError> {
        summary.negatives = self.learner.negatives();
        summary.knn_top1_at_init = self.start.knn_top1_at_init;
        let mut rows = std::mem::take(&mut self.start.rows);
        let mut step = self.start.step;
        write_metrics(&self.dir.metrics(), &rows)?;
        if self.knn_at_init && summary.knn_top1_at_init.is_none() && self.start.epoch == 0 {
            let acc = self.knn()?;
            eprintln!("kNN top-1 at initialisation: {acc:.2}%");
            summary.knn_top1_at_init = Some(acc);
        }
        let mut wall = rows.last().map(|r| r.wall_s).unwrap_or(0.0);
        for epoch in self.start.epoch..self.cfg.train.epochs {
            if step >= self.max_steps {
                break;
            }
            let first = if epoch == self.start.epoch { self.start.first_batch } else { 0 };
            let t_epoch = Instant::now();
            let end = self.epoch(epoch, first, &mut step)?;
            let train_s = t_epoch.elapsed().as_secs_f64();
            wall += train_s;
            let (sums, lr) = match end {
                EpochEnd::Done(sums, lr) => (sums, lr),
                EpochEnd::Diverged { loss, lr } => {
                    let msg = format!("loss became {loss} at step {step} (epoch {}); run stopped", epoch + 1);
                    eprintln!("diverged: {msg}");
                    let row = EpochMetrics {
                        epoch: epoch + 1,
                        step,
                        lr,
                        loss: loss as f64,
                        contrast_acc1: f64::NAN,
                        knn_top1: None,
                        images_per_s: 0.0,
                        wall_s: wall,
                    };
                    push_row(self.dir, &mut rows, row)?;
                    summarize(summary, &rows, step, Some(epoch));
                    summary.status = RunStatus::Diverged;
                    summary.message = Some(msg);
                    return Ok(());
                }
            };
            let last = epoch + 1 == self.cfg.train.epochs || step >= self.max_steps;
            let every = self.cfg.eval.knn_every;
            let knn = match (every > 0 && (epoch + 1) % every == 0) || last {
                true => Some(self.knn()?),
                false => None,
            };
            let row = EpochMetrics {
                epoch: epoch + 1,
                step,
                lr,
                loss: sums.loss(),
                contrast_acc1: sums.acc(),
                knn_top1: knn,
                images_per_s: (sums.count * self.cfg.train.batch_size) as f64 / train_s.max(1e-9),
                wall_s: wall,
            };
            self.print_epoch(&row);
            // Row first, then the checkpoint: a kill in between replays this epoch on resume.
            push_row(self.dir, &mut rows, row)?;
            let wall_total = self.start.wall_s + started.elapsed().as_secs_f64();
            save_checkpoint(&self.learner, self.dir, epoch + 1, step, wall_total, summary)?;
        }
        summarize(summary, &rows, step, None);
        self.finish(summary, rows.last().and_then(|r| r.knn_top1), started)
    }

    /// The steps of one epoch from batch `first`; `step` counts them.
    fn epoch(&mut self, epoch: usize, first: usize, step: &mut usize) -> Result<EpochEnd, TrainError> {
        let (cfg, batch) = (self.cfg, self.cfg.train.batch_size);
        let n_batches = self.steps_per_epoch.min(first + (self.max_steps - *step));
        let order = train_order(&self.train_set, &cfg.data, cfg.seed, epoch as u64);
        let mut loader = EpochLoader::spawn(
            self.train_set.clone(),
            order,
            batch,
            first,
            n_batches,
            epoch as u64,
            self.spec.clone(),
            cfg.data.prefetch,
            self.pool.clone(),
        );
        let pb = bar(
            (n_batches - first) as u64,
            format!("epoch {}/{}", epoch + 1, cfg.train.epochs),
            self.show,
        );
        let t_epoch = Instant::now();
        let (mut sums, mut lr) = (EpochSums::default(), self.lr0);
        while let Some(b) = loader.next_batch() {
            let b = b.map_err(TrainError::Batch)?;
            let progress = *step as f64 / self.steps_per_epoch as f64;
            let t = &cfg.train;
            lr = lr_at(t.schedule, self.lr0, progress, t.epochs, &t.milestones, t.warmup_epochs);
            let size = cfg.data.image_size;
            let views = b
                .views
                .into_iter()
                .map(|v| Tensor::from_vec(v, (b.len, 3, size, size), &self.device))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let choices = self
                .learner
                .draw_choices(b.len, &mut stream(cfg.seed, Purpose::Step, *step as u64, 0));
            // m of this step's EMA: the cosine schedule spans the lr schedule's T = epochs × steps.
            self.learner.key_momentum = key_momentum(&cfg.moco, *step, t.epochs * self.steps_per_epoch);
            let stats = self.learner.step(&views, &b.indices, lr, &choices)?;
            *step += 1;
            if !stats.loss.is_finite() {
                pb.abandon_with_message(format!("loss became {} at step {step}", stats.loss));
                return Ok(EpochEnd::Diverged { loss: stats.loss, lr });
            }
            sums.loss += stats.loss as f64;
            sums.acc += stats.contrast_acc1 as f64;
            sums.count += 1;
            pb.inc(1);
            let ips = (sums.count * batch) as f64 / t_epoch.elapsed().as_secs_f64();
            pb.set_message(format!("loss {:.4} acc {:.1}% {ips:.1} img/s", sums.loss(), 100.0 * sums.acc()));
        }
        pb.finish_and_clear();
        let skipped = self.spec.skipped_files();
        if let Some(first) = skipped.first() {
            eprintln!(
                "data: {} samples so far replaced by the next one, their file not decoding (data.skip_corrupt); first {}",
                skipped.len(),
                first.display()
            );
        }
        Ok(EpochEnd::Done(sums, lr))
    }

    fn print_epoch(&self, row: &EpochMetrics) {
        eprintln!(
            "epoch {:>3}/{}  step {}  lr {:.4}  loss {:.4}  contrast_acc1 {:.3}  {}{:.1} img/s",
            row.epoch,
            self.cfg.train.epochs,
            row.step,
            row.lr,
            row.loss,
            row.contrast_acc1,
            row.knn_top1.map(|k| format!("knn_top1 {k:.2}%  ")).unwrap_or_default(),
            row.images_per_s
        );
    }

    /// The final kNN (the last epoch's, else measured now), the linear protocol when asked,
    /// and the status.
    fn finish(&self, summary: &mut RunSummary, last_knn: Option<f64>, started: Instant) -> Result<(), TrainError> {
        summary.knn_top1 = Some(match last_knn {
            Some(k) => k,
            None => self.knn()?,
        });
        if self.cfg.eval.linear_at_end {
            let acc = linear_eval(&self.learner.encoder_q, &self.splits, self.cfg, &self.device, self.show)?;
            eprintln!("linear top-1: {acc:.2}%");
            summary.linear_top1 = Some(acc);
        }
        summary.status = RunStatus::Ok;
        let secs = started.elapsed().as_secs_f64();
        let knn = summary.knn_top1.unwrap_or(f64::NAN);
        match summary.knn_top1_at_init {
            Some(init) => eprintln!(
                "kNN top-1 {init:.1}% at init → {knn:.1}% after {} epochs ({:+.1}) in {secs:.0} s",
                summary.epochs,
                knn - init
            ),
            None => eprintln!("done in {secs:.1}s: kNN top-1 {knn:.2}%"),
        }
        Ok(())
    }
}
