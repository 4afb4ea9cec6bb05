//! The `moco` command line: `train`, `eval`, `embed`, `config`.

use crate::config::{FeatureKind, RunConfig, ValidRunConfig};
use crate::data::{self, DataError};
use crate::eval::features::extract;
use crate::io::checkpoint::{Checkpoint, HostTensor};
use crate::io::run_dir::{RunDir, RunStatus, RunSummary};
use crate::model::Encoder;
use crate::train::run::{eval_input, knn_eval, linear_eval};
use crate::train::state::store_from_prefix;
use crate::train::{make_device, train, TrainOptions};
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};

/// Momentum Contrast (MoCo) on candle: train, evaluate, export.
#[derive(Debug, Parser)]
#[command(name = "moco", version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("MOCO_BUILD_COMMIT"), ")"), about)]
pub struct Cli {
    /// Command.
    #[command(subcommand)]
    pub command: Command,
    /// Where tensors live: cpu, cuda, cuda:N or auto (CUDA when built with `--features cuda` and
    /// a GPU is there). Overrides the config's `device` (same as --set device=…).
    #[arg(long, global = true, value_name = "DEVICE")]
    pub device: Option<String>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a run (or resume one).
    Train {
        /// Run config (TOML). Without it: the built-in defaults.
        config: Option<PathBuf>,
        /// Override a config key, e.g. --set moco.momentum=0.999 (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Run directory (default: results/runs/<config name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue the run in this directory from its last checkpoint.
        #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["config", "out", "init"])]
        resume: Option<PathBuf>,
        /// Start from these weights (and queue, if the file has one); a file or hf://NS/NAME[@REV].
        #[arg(long, value_name = "CKPT")]
        init: Option<PathBuf>,
        /// Also measure the kNN accuracy of the encoder at initialisation.
        #[arg(long)]
        knn_at_init: bool,
        /// Never draw progress bars.
        #[arg(long)]
        no_progress: bool,
    },
    /// Evaluate the query encoder of a run directory or checkpoint.
    Eval {
        /// Protocol.
        protocol: Protocol,
        /// Run directory, checkpoint file, or hf://NAMESPACE/NAME[@REVISION].
        target: PathBuf,
        /// Override config keys (e.g. eval.linear.epochs=30, data.path=…).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Write backbone (or head) features and labels of a dataset split to safetensors.
    Embed {
        /// Checkpoint: a run's checkpoint.safetensors, an exported model.safetensors, or
        /// hf://NAMESPACE/NAME[@REVISION].
        checkpoint: PathBuf,
        /// Dataset: an ImageFolder root (with train/ and test/), a CIFAR binary folder, or
        /// `builtin` for the synthetic dataset.
        #[arg(long)]
        data: String,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Split.
        #[arg(long, default_value = "test")]
        split: Split,
        /// Features.
        #[arg(long, default_value = "backbone")]
        features: Features,
        /// Only the first N images of the split (0 = all).
        #[arg(long, default_value_t = 0)]
        limit: usize,
        /// Also store the normalised network inputs as `inputs` (N, 3, H, W), to check the
        /// features in another framework (bench/torch_check_export.py).
        #[arg(long)]
        with_inputs: bool,
    },
    /// Run a sweep (TOML grid of configs): plan, run, resume, runs.csv, plots.
    Sweep {
        /// Sweep file (e.g. experiments/momentum-cpu.toml).
        file: PathBuf,
        /// Print the plan and stop.
        #[arg(long)]
        dry_run: bool,
        /// Run only every n-th point: `i/n` (0-based i), for n machines sharing a sweep.
        #[arg(long, value_name = "I/N")]
        shard: Option<String>,
        /// Only rebuild runs.csv, plots and README from the run directories.
        #[arg(long)]
        collect: bool,
        /// Root of the results tree.
        #[arg(long, default_value = "results")]
        results: PathBuf,
        /// Measure kNN at initialisation for every run.
        #[arg(long)]
        knn_at_init: bool,
        /// Never draw progress bars.
        #[arg(long)]
        no_progress: bool,
        /// Publish every finished run to the Hub as NAMESPACE/PREFIX-<run id> (see `moco push`).
        #[arg(long, value_name = "NAMESPACE/PREFIX")]
        push: Option<String>,
    },
    /// Publish a run's query encoder to the Hugging Face Hub in one commit: model.safetensors
    /// (torchvision names, loadable in PyTorch), config.json, README.md (model card with the
    /// run's kNN/linear top-1), metrics.csv. Token: HF_TOKEN or `hf auth login`'s file.
    Push {
        /// Run directory (holding checkpoint.safetensors).
        run_dir: PathBuf,
        /// Target model repo, NAMESPACE/NAME (created when missing).
        #[arg(long)]
        repo: String,
        /// Create the repo private.
        #[arg(long)]
        private: bool,
        /// Branch to commit to (created from main when missing).
        #[arg(long, value_name = "BRANCH")]
        revision: Option<String>,
        /// Tag the commit (e.g. epoch-200).
        #[arg(long)]
        tag: Option<String>,
        /// Hub dataset id for the card (default: guessed, e.g. uoft-cs/cifar10 for CIFAR-10).
        #[arg(long)]
        dataset_id: Option<String>,
        /// Only write the files into this folder; no network.
        #[arg(long, value_name = "DIR")]
        export_only: Option<PathBuf>,
    },
    /// Download a model repo (every file) into the Hub cache and print where it is.
    Pull {
        /// NAMESPACE/NAME or hf://NAMESPACE/NAME[@REVISION].
        repo: String,
        /// Branch, tag or commit.
        #[arg(long)]
        revision: Option<String>,
    },
    /// Redraw a sweep's figures from its CSV files.
    Plot {
        /// results/<sweep> folder (holding runs.csv).
        dir: PathBuf,
    },
    /// Benchmarks: the training step (speed, peak memory, per-op breakdown), the augmentation
    /// pipeline, and the ratio to PyTorch's numbers (bench/README.md).
    Bench {
        /// What to measure.
        #[command(subcommand)]
        what: BenchCommand,
    },
    /// Datasets: download the official archives (checksummed), or pack a class-balanced subset
    /// as CIFAR-10 binary (small enough to carry).
    Data {
        /// What to do.
        #[command(subcommand)]
        what: DataCommand,
    },
    /// Check every op of the training step on --device against the CPU path (relative error
    /// < 1e-4 in f32); on CPU, candle's ops (the CUDA path) against the CPU kernels. Exit 1 on
    /// any failure.
    DeviceCheck,
    /// Print the fully resolved, validated config.
    Config {
        /// Run config (TOML).
        config: Option<PathBuf>,
        /// Overrides.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
}

/// `moco data` subcommands.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Write a class-balanced subset of a CIFAR-10 dataset (ImageFolder or binary) in the
    /// CIFAR-10 binary format: 3,073 bytes per image (12,000 images ≈ 37 MB).
    Pack {
        /// Source: an ImageFolder root (train/, test/) or a CIFAR binary folder.
        #[arg(long)]
        data: String,
        /// Training images to keep (0 = all), the same number per class.
        #[arg(long, default_value_t = 10000)]
        train: usize,
        /// Test images to keep (0 = all).
        #[arg(long, default_value_t = 2000)]
        test: usize,
        /// Output folder (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Download an official dataset archive (CIFAR-10/100 or STL-10 binary), verify its
    /// published MD5, unpack it whole or not at all, and print the config lines that use it.
    /// An interrupted download resumes; a complete dataset is not fetched again.
    #[cfg(feature = "hub")]
    Download {
        /// Dataset.
        #[arg(value_parser = ["cifar10", "cifar100", "stl10"])]
        which: String,
        /// Folder that receives the dataset folder (e.g. data/cifar-10-batches-bin).
        #[arg(long, default_value = "data")]
        dir: PathBuf,
        /// Fetch from this URL instead of the official one (a mirror).
        #[arg(long)]
        url: Option<String>,
        /// Expect this MD5 instead of the published one.
        #[arg(long)]
        md5: Option<String>,
    },
}

/// `moco bench` subcommands.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Time the training step of a config on random input (median after warm-up): img/s,
    /// peak RSS, and with --ops the per-op breakdown.
    Step {
        /// Run config (e.g. bench/step.toml); batch, K, mode, width come from it.
        config: Option<PathBuf>,
        /// Override a config key (repeatable), e.g. --set train.batch_size=256.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Untimed steps first.
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// Timed steps (the median is reported).
        #[arg(long, default_value_t = 5)]
        steps: usize,
        /// Also time each op class of the step.
        #[arg(long)]
        ops: bool,
        /// Repetitions per op (median).
        #[arg(long, default_value_t = 3)]
        op_reps: usize,
        /// Also write the report (JSON) here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Augmentation throughput on one core: decode N images, then two views of each.
    Augment {
        /// Run config (its augment.* and data.image_size are used).
        config: Option<PathBuf>,
        /// Override a config key (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// ImageFolder root (train/<class>/*.jpg).
        #[arg(long, default_value = "../shared/data/cifar10-jpeg")]
        data: PathBuf,
        /// Images (the first N in sorted order).
        #[arg(long, default_value_t = 2000)]
        images: usize,
        /// Timed passes over the images (the median is reported).
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Also write the report (JSON) here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Print ours / theirs from two step reports (JSON from `bench step` and bench/torch_step.py),
    /// or two augment reports with --augment.
    Compare {
        /// Our report.
        ours: PathBuf,
        /// The reference's report.
        theirs: PathBuf,
        /// The files are augmentation reports.
        #[arg(long)]
        augment: bool,
    },
}

/// Evaluation protocol.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Protocol {
    /// Weighted kNN (k, t from eval.*).
    Knn,
    /// Linear classification on the frozen backbone.
    Linear,
}

/// Dataset split.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq)]
pub enum Split {
    /// Training split.
    Train,
    /// Test split.
    Test,
}

/// Feature kind for `embed`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Features {
    /// Pooled backbone.
    Backbone,
    /// Head output.
    Head,
}

/// Load and validate a config with overrides.
pub fn load_config(path: Option<&Path>, set: &[String]) -> Result<ValidRunConfig> {
    let cfg = RunConfig::load(path, set)?;
    let origin = path.map(|p| p.display().to_string()).unwrap_or_else(|| "built-in defaults".into());
    cfg.validate().with_context(|| format!("invalid config ({origin})"))
}

/// Run a parsed command; returns the process exit code.
pub fn run(cli: Cli) -> Result<i32> {
    // --device is one more override, last so that it wins.
    let device_set = cli.device.as_ref().map(|d| format!("device={}", toml::Value::String(d.clone())));
    let with_device = |mut set: Vec<String>| {
        set.extend(device_set.clone());
        set
    };
    if let Some(d) = &cli.device {
        crate::config::parse_device(d).with_context(|| format!("--device {d}"))?;
    }
    match cli.command {
        Command::Train {
            config,
            set,
            out,
            resume,
            init,
            knn_at_init,
            no_progress,
        } => {
            let set = with_device(set);
            let init = init.map(|p| crate::hub::resolve_checkpoint(&p)).transpose()?;
            let opts = TrainOptions {
                resume: resume.is_some(),
                init,
                knn_at_init,
                progress: !no_progress,
            };
            let (cfg, dir) = match resume {
                Some(dir) => {
                    let rd = RunDir::new(&dir);
                    if !rd.config().exists() {
                        bail!("--resume {}: no config.toml (not a run directory)", dir.display());
                    }
                    if let Ok(s) = RunSummary::load(&rd.summary()) {
                        if s.status != RunStatus::Failed {
                            eprintln!("{}: already finished ({:?}); nothing to do", dir.display(), s.status);
                            return Ok(0);
                        }
                    }
                    (load_config(Some(&rd.config()), &set)?, rd)
                }
                None => {
                    let cfg = load_config(config.as_deref(), &set)?;
                    let name = config
                        .as_deref()
                        .and_then(|c| c.file_stem())
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "default".into());
                    let dir = RunDir::new(out.unwrap_or_else(|| PathBuf::from("results/runs").join(name)));
                    if dir.checkpoint().exists() || dir.summary().exists() {
                        bail!(
                            "{} already holds a run; use --resume {} or another --out",
                            dir.root.display(),
                            dir.root.display()
                        );
                    }
                    (cfg, dir)
                }
            };
            eprintln!("run directory: {}", dir.root.display());
            let summary = train(&cfg, &dir, &opts)?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
            Ok(if summary.status == RunStatus::Ok { 0 } else { 3 })
        }
        Command::Eval { protocol, target, set } => {
            let set = with_device(set);
            let (ck_path, run_dir) = if target.is_dir() {
                (RunDir::new(&target).checkpoint(), Some(RunDir::new(&target)))
            } else {
                (crate::hub::resolve_checkpoint(&target)?, None)
            };
            let ck = crate::hub::load_checkpoint(&ck_path)?;
            let cfg = config_from_checkpoint(&ck, &ck_path, &set)?;
            let device = make_device(&cfg.device)?;
            let encoder = encoder_from_checkpoint(&ck, &cfg, &device)?;
            let splits = data::load(&cfg.data, cfg.seed).context("loading the dataset (data.*)")?;
            let acc = match protocol {
                Protocol::Knn => knn_eval(&encoder, &splits, &cfg, &device, true)?,
                Protocol::Linear => linear_eval(&encoder, &splits, &cfg, &device, true)?,
            };
            println!("{protocol:?} top-1: {acc:.2}%");
            if let Some(rd) = run_dir {
                if let Ok(mut s) = RunSummary::load(&rd.summary()) {
                    match protocol {
                        Protocol::Knn => s.knn_top1 = Some(acc),
                        Protocol::Linear => s.linear_top1 = Some(acc),
                    }
                    s.save(&rd.summary()).map_err(anyhow::Error::msg)?;
                }
            }
            Ok(0)
        }
        Command::Embed {
            checkpoint,
            data,
            out,
            split,
            features,
            limit,
            with_inputs,
        } => {
            let checkpoint = crate::hub::resolve_checkpoint(&checkpoint)?;
            let ck = crate::hub::load_checkpoint(&checkpoint)?;
            let data_set = with_device(dataset_override(&data)?);
            let cfg = config_from_checkpoint(&ck, &checkpoint, &data_set)?;
            let device = make_device(&cfg.device)?;
            let encoder = encoder_from_checkpoint(&ck, &cfg, &device)?;
            let splits = data::load(&cfg.data, cfg.seed).context("loading the dataset")?;
            let mut set = if split == Split::Train { splits.train } else { splits.test };
            set.truncate(limit);
            let set = &set;
            let kind = match features {
                Features::Backbone => FeatureKind::Backbone,
                Features::Head => FeatureKind::Head,
            };
            let pb = crate::train::run::bar(set.len() as u64, "embed".into(), true);
            let f = extract(&encoder, set, eval_input(&cfg), kind, 256, &device, |n| pb.inc(n as u64))?;
            pb.finish_and_clear();
            let mut outck = Checkpoint::default();
            outck.tensors.insert("features".into(), HostTensor::from_tensor(&f, false)?);
            outck.tensors.insert(
                "labels".into(),
                HostTensor::I64(vec![set.len()], set.labels.iter().map(|&l| l as i64).collect()),
            );
            if with_inputs {
                let input = eval_input(&cfg);
                let idx: Vec<usize> = (0..set.len()).collect();
                let x = crate::data::loader::eval_batch(set, &idx, input.image_size, input.mean, input.std);
                outck.tensors.insert(
                    "inputs".into(),
                    HostTensor::F32(vec![set.len(), 3, input.image_size, input.image_size], x),
                );
            }
            outck.metadata.insert("classes".into(), set.classes.join(","));
            outck.metadata.insert("checkpoint".into(), checkpoint.display().to_string());
            outck.save(&out)?;
            println!("wrote {} ({} × {})", out.display(), set.len(), f.dim(1)?);
            Ok(0)
        }
        Command::Sweep {
            file,
            dry_run,
            shard,
            collect,
            results,
            knn_at_init,
            no_progress,
            push,
        } => {
            let sweep = crate::sweep::Sweep::load(&file)?;
            if let Some(p) = &push {
                if !crate::hub::ENABLED {
                    return Err(crate::hub::disabled("--push"));
                }
                crate::hub::HubRef::parse(p, true).with_context(|| format!("--push {p}"))?;
            }
            let shard = shard.as_deref().map(parse_shard).transpose()?;
            eprint!("sweep {} ({} runs):\n{}", sweep.name, sweep.points.len(), sweep.plan());
            if dry_run {
                return Ok(0);
            }
            let dir = crate::sweep::runner::sweep_dir(&sweep, &results);
            let outcome = if collect {
                crate::sweep::runner::write_runs_csv(&sweep, &results)?;
                Default::default()
            } else {
                let opts = crate::sweep::runner::SweepOptions {
                    shard,
                    results_root: results.clone(),
                    progress: !no_progress,
                    knn_at_init,
                    device: cli.device.clone(),
                };
                crate::sweep::runner::run_sweep(&sweep, &opts)?
            };
            let (header, rows) = crate::sweep::results::read_csv(&dir.join("runs.csv")).map_err(anyhow::Error::msg)?;
            let _ = header;
            let command = format!("moco sweep {}", file.display());
            crate::sweep::results::write_readme(&dir, &sweep.name, &sweep.keys, &rows, &command).map_err(anyhow::Error::msg)?;
            for f in crate::plot::plot_sweep(&dir).map_err(anyhow::Error::msg)? {
                eprintln!("wrote {}", f.display());
            }
            eprintln!(
                "{}: {} ran, {} skipped, {} diverged, {} failed",
                dir.join("runs.csv").display(),
                outcome.ran,
                outcome.skipped,
                outcome.diverged,
                outcome.failed.len()
            );
            for f in &outcome.failed {
                eprintln!("  failed: {f}");
            }
            let mut code = if outcome.failed.is_empty() { 0 } else { 4 };
            if let Some(prefix) = &push {
                code = code.max(push_sweep(&dir, &rows, prefix)?);
            }
            Ok(code)
        }
        Command::Push {
            run_dir,
            repo,
            private,
            revision,
            tag,
            dataset_id,
            export_only,
        } => {
            let card = crate::hub::export::CardOptions {
                repo: repo.clone(),
                dataset_id,
                license: None,
            };
            if let Some(out) = export_only {
                let ex = crate::hub::export::export_run(&run_dir, &out, &card)?;
                for f in &ex.files {
                    println!("{}", out.join(f).display());
                }
                return Ok(0);
            }
            push_run(&run_dir, &repo, private, revision, tag, card)
        }
        Command::Pull { repo, revision } => pull_repo(&repo, revision),
        Command::Plot { dir } => {
            for f in crate::plot::plot_sweep(&dir).map_err(anyhow::Error::msg)? {
                println!("wrote {}", f.display());
            }
            Ok(0)
        }
        Command::Bench { what } => bench(what, &with_device),
        Command::Data {
            what: DataCommand::Pack { data, train, test, out },
        } => {
            let mut set = dataset_override(&data)?;
            set.push(format!("data.train_limit={train}"));
            set.push(format!("data.test_limit={test}"));
            let cfg = load_config(None, &set)?;
            let splits = data::load(&cfg.data, cfg.seed)?;
            data::cifar::write_cifar10_bin(&out, &splits)?;
            println!(
                "wrote {} ({} train + {} test images, CIFAR-10 binary); use it with --set data.source=cifar_bin --set data.path={}",
                out.display(),
                splits.train.len(),
                splits.test.len(),
                out.display()
            );
            Ok(0)
        }
        #[cfg(feature = "hub")]
        Command::Data {
            what: DataCommand::Download { which, dir, url, md5 },
        } => {
            use crate::data::download;
            let src = download::source(&which).with_context(|| format!("unknown dataset {which:?}"))?;
            let opts = download::DownloadOptions {
                url,
                md5,
                ..Default::default()
            };
            let folder = download::download(src, &dir, &opts)?;
            println!("# {} in {}; use it with these config lines:", src.title, folder.display());
            for line in download::config_lines(src, &folder) {
                println!("{line}");
            }
            Ok(0)
        }
        Command::DeviceCheck => {
            let device = make_device(cli.device.as_deref().unwrap_or("auto"))?;
            let checks = crate::devcheck::run_checks(&device)?;
            print!("{}", crate::devcheck::report(&device, &checks));
            Ok(if checks.iter().all(|c| c.ok()) { 0 } else { 1 })
        }
        Command::Config { config, set } => {
            print!("{}", load_config(config.as_deref(), &set)?.to_toml());
            Ok(0)
        }
    }
}

fn write_json(path: Option<&Path>, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    println!("{text}");
    if let Some(p) = path {
        crate::io::atomic::write_atomic(p, format!("{text}\n").as_bytes())?;
    }
    Ok(())
}

fn bench(what: BenchCommand, with_device: &dyn Fn(Vec<String>) -> Vec<String>) -> Result<i32> {
    use crate::bench::*;
    match what {
        BenchCommand::Step {
            config,
            set,
            warmup,
            steps,
            ops,
            op_reps,
            json,
        } => {
            let cfg = load_config(config.as_deref(), &with_device(set))?;
            let device = make_device(&cfg.device)?;
            eprintln!(
                "bench step: {:?} width {} batch {} K {} ({:?}), {warmup} warm-up + {steps} timed steps{}",
                cfg.model.arch,
                cfg.model.width,
                cfg.train.batch_size,
                cfg.dictionary.size,
                cfg.dictionary.mode,
                if ops { ", then the per-op breakdown" } else { "" }
            );
            let r = bench_step(&cfg, &device, warmup, steps, if ops { op_reps } else { 0 })?;
            write_json(json.as_deref(), &r)?;
        }
        BenchCommand::Augment {
            config,
            set,
            data,
            images,
            reps,
            json,
        } => {
            let cfg = load_config(config.as_deref(), &set)?;
            let files = bench_images(&data, images)?;
            eprintln!(
                "bench augment: {} images from {}, {reps} passes, one thread",
                files.len(),
                data.display()
            );
            let r = bench_augment(&cfg, &files, reps)?;
            write_json(json.as_deref(), &r)?;
        }
        BenchCommand::Compare { ours, theirs, augment } => {
            if augment {
                let (a, b): (AugmentReport, AugmentReport) = (read_report(&ours)?, read_report(&theirs)?);
                println!(
                    "augment, one core, {} images at {}px, two views each:\n  {:<14} {:>10.0} img/s\n  {:<14} {:>10.0} img/s\n  ratio {:.2}x (ours / theirs)",
                    a.images, a.size, a.implementation, a.augment_img_per_s, b.implementation, b.augment_img_per_s,
                    a.augment_img_per_s / b.augment_img_per_s
                );
            } else {
                print!("{}", compare_steps(&read_report(&ours)?, &read_report(&theirs)?));
            }
        }
    }
    Ok(0)
}

/// `--set` entries that point a config at a dataset given on the command line.
fn dataset_override(data: &str) -> Result<Vec<String>> {
    if data == "builtin" {
        return Ok(vec!["data.source=synthetic".into()]);
    }
    let p = Path::new(data);
    let source = if p.join("train").is_dir() {
        "image_folder"
    } else if p.join("data_batch_1.bin").exists() || p.join("train.bin").exists() {
        "cifar_bin"
    } else if p.join("train_X.bin").exists() {
        "stl10"
    } else {
        return Err(DataError::Layout {
            path: p.into(),
            message: "not an ImageFolder root (train/, test/), a CIFAR binary folder nor an STL-10 binary folder".into(),
        }
        .into());
    };
    Ok(vec![
        format!("data.source={source}"),
        format!("data.path={}", toml::Value::String(data.into())),
    ])
}

/// The run config stored in a checkpoint's metadata, with overrides.
pub fn config_from_checkpoint(ck: &Checkpoint, path: &Path, set: &[String]) -> Result<ValidRunConfig> {
    let text = ck
        .metadata
        .get("config")
        .with_context(|| format!("{}: no config in the checkpoint metadata", path.display()))?;
    let mut table: toml::Table = toml::from_str(text).with_context(|| format!("{}: config metadata is not TOML", path.display()))?;
    for s in set {
        let (k, v) = crate::config::parse_override(s)?;
        crate::config::apply_override(&mut table, &k, v)?;
    }
    let cfg = RunConfig::from_table(table, &format!("{} (metadata)", path.display()))?;
    cfg.validate().with_context(|| format!("{}: invalid config", path.display()))
}

/// Build the query encoder of a checkpoint (strict names).
pub fn encoder_from_checkpoint(ck: &Checkpoint, cfg: &ValidRunConfig, device: &candle_core::Device) -> Result<Encoder> {
    let store = store_from_prefix(ck, "encoder_q.", device)?;
    let before = store.entries().len();
    let enc = Encoder::new(&cfg.model, &store, cfg.seed)?;
    if store.entries().len() != before {
        bail!("checkpoint is missing encoder_q tensors for model {:?}", cfg.model);
    }
    Ok(enc)
}

/// Parse `i/n` with `i < n`.
fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let parsed = s
        .split_once('/')
        .and_then(|(i, n)| Some((i.parse::<usize>().ok()?, n.parse::<usize>().ok()?)));
    match parsed {
        Some((i, n)) if n > 0 && i < n => Ok((i, n)),
        _ => bail!("--shard {s:?}: expected I/N with 0 <= I < N"),
    }
}

/// `moco push` (feature `hub`).
#[cfg(feature = "hub")]
fn push_run(
    run_dir: &Path,
    repo: &str,
    private: bool,
    revision: Option<String>,
    tag: Option<String>,
    card: crate::hub::export::CardOptions,
) -> Result<i32> {
    let opts = crate::hub::client::PushOptions {
        repo: repo.to_string(),
        private,
        revision,
        tag,
        card,
    };
    let report = crate::hub::client::push(run_dir, &opts)?;
    println!(
        "pushed {} to {} (commit {}): {}",
        run_dir.display(),
        report.repo,
        report.commit.as_deref().unwrap_or("?"),
        report.files.join(", ")
    );
    if let Some(url) = &report.url {
        println!("{url}");
    }
    println!("load it with: moco eval knn hf://{}", report.repo);
    Ok(0)
}

/// `moco pull` (feature `hub`).
#[cfg(feature = "hub")]
fn pull_repo(repo: &str, revision: Option<String>) -> Result<i32> {
    let mut r = crate::hub::HubRef::parse(repo, true)?.expect("scheme optional");
    if revision.is_some() {
        r.revision = revision;
    }
    let dir = crate::hub::client::pull(&r)?;
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    println!("{}", dir.display());
    for f in files {
        println!("  {f}");
    }
    Ok(0)
}

/// `moco sweep --push`: publish every finished run as PREFIX-<run id>; returns 5 if any failed.
#[cfg(feature = "hub")]
fn push_sweep(dir: &Path, rows: &[crate::sweep::results::Row], prefix: &str) -> Result<i32> {
    let mut code = 0;
    for row in rows {
        let (Some(id), Some(status)) = (row.get("run_id"), row.get("status")) else {
            continue;
        };
        if status != "ok" {
            eprintln!("push: {id} is {status}; not published");
            continue;
        }
        let repo = format!("{prefix}-{id}");
        let card = crate::hub::export::CardOptions {
            repo: repo.clone(),
            ..Default::default()
        };
        if let Err(e) = push_run(&dir.join(id), &repo, false, None, None, card) {
            eprintln!("push: {id}: {e:#}");
            code = 5;
        }
    }
    Ok(code)
}

#[cfg(not(feature = "hub"))]
fn push_run(_: &Path, _: &str, _: bool, _: Option<String>, _: Option<String>, _: crate::hub::export::CardOptions) -> Result<i32> {
    Err(crate::hub::disabled("moco push"))
}

#[cfg(not(feature = "hub"))]
fn pull_repo(_: &str, _: Option<String>) -> Result<i32> {
    Err(crate::hub::disabled("moco pull"))
}

#[cfg(not(feature = "hub"))]
fn push_sweep(_: &Path, _: &[crate::sweep::results::Row], _: &str) -> Result<i32> {
    unreachable!("--push is rejected before the sweep runs in a build without `hub`")
}
