//! Developer tools: `moco bench` (speed and memory, bench/README.md), `moco device-check`
//! (every op on a device against the CPU path), `moco config` (the resolved config).

use super::{load_config, parse_set, ExitCode, Global};
use crate::bench::{bench_augment, bench_images, bench_step, bench_stream, compare_steps, read_report, AugmentReport};
use crate::config::Override;
use crate::device::make_device;
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use std::path::{Path, PathBuf};

/// `moco bench` subcommands.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Time the training step of a config on random input (median after warm-up): img/s,
    /// peak RSS, and with --ops the per-op breakdown.
    Step {
        /// Run config (e.g. bench/step.toml); batch, K, mode, width come from it.
        config: Option<PathBuf>,
        /// Override a config key (repeatable), e.g. --set train.batch_size=256.
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
        set: Vec<Override>,
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
    /// One epoch of the training input pipeline alone (streamed or decoded as the config
    /// says): images per second and peak RSS, the batches dropped as they arrive.
    Stream {
        /// Run config (data.*, augment.*, train.batch_size).
        config: Option<PathBuf>,
        /// Override a config key (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
        set: Vec<Override>,
        /// Also write the report (JSON) here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Augmentation throughput on one core: decode N images, then two views of each.
    Augment {
        /// Run config (its augment.* and data.image_size are used).
        config: Option<PathBuf>,
        /// Override a config key (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
        set: Vec<Override>,
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
    /// The cost side of the paper's Figure 3: step time and peak memory of every point of a
    /// (queue) sweep, each in its own process (`moco bench step` on random input, so peak
    /// memory is the point's own), into results/<sweep>/cost.csv; `moco plot` then draws
    /// cost-step and cost-memory against K.
    Cost {
        /// Sweep file (e.g. experiments/queue-cpu.toml).
        sweep: PathBuf,
        /// Root of the results tree.
        #[arg(long, default_value = "results")]
        results: PathBuf,
        /// Untimed steps first.
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// Timed steps (the median is reported).
        #[arg(long, default_value_t = 5)]
        steps: usize,
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

/// Arguments of `moco config`.
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// Run config (TOML).
    pub config: Option<PathBuf>,
    /// Override a config key, e.g. --set train.batch_size=256 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
    pub set: Vec<Override>,
}

/// Run a `moco bench` subcommand.
pub fn bench(what: BenchCommand, g: &Global) -> Result<ExitCode> {
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
            let cfg = load_config(config.as_deref(), &g.with_device(set))?;
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
            write_json(json.as_deref(), &bench_augment(&cfg, &files, reps)?)?;
        }
        BenchCommand::Stream { config, set, json } => {
            let cfg = load_config(config.as_deref(), &set)?;
            write_json(json.as_deref(), &bench_stream(&cfg)?)?;
        }
        BenchCommand::Compare { ours, theirs, augment } => compare(&ours, &theirs, augment)?,
        BenchCommand::Cost {
            sweep,
            results,
            warmup,
            steps,
        } => cost(&sweep, &results, warmup, steps, g)?,
    }
    Ok(ExitCode::Ok)
}

/// `moco bench cost`: each point of the sweep through `moco bench step` in a child process.
fn cost(file: &Path, results: &Path, warmup: usize, steps: usize, g: &Global) -> Result<()> {
    let sweep = crate::sweep::Sweep::load(file)?;
    let dir = crate::sweep::runner::sweep_dir(&sweep, results);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let scratch = tempfile_dir(&dir)?;
    let exe = std::env::current_exe().context("locating the moco binary")?;
    let mut rows = Vec::new();
    for (i, p) in sweep.points.iter().enumerate() {
        let (cfg_path, json) = (
            scratch.join(format!("{}.toml", p.run_id)),
            scratch.join(format!("{}.json", p.run_id)),
        );
        std::fs::write(&cfg_path, p.config.to_toml()).with_context(|| format!("writing {}", cfg_path.display()))?;
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["bench", "step"])
            .arg(&cfg_path)
            .args(["--warmup", &warmup.to_string(), "--steps", &steps.to_string(), "--json"])
            .arg(&json);
        if let Some(d) = &g.device {
            cmd.args(["--device", d]);
        }
        eprintln!("[{}/{}] #{} {}", i + 1, sweep.points.len(), p.index, p.label());
        let out = cmd.output().context("running moco bench step")?;
        if !out.status.success() {
            bail!(
                "bench step of point #{} ({}) failed: {}",
                p.index,
                p.label(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let r: crate::bench::StepReport = read_report(&json)?;
        rows.push(crate::sweep::results::cost_row(p, &r));
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let path = dir.join("cost.csv");
    crate::io::table::write_csv(&path, &crate::sweep::results::cost_header(), &rows)?;
    println!("wrote {}", path.display());
    Ok(())
}

fn tempfile_dir(parent: &Path) -> Result<PathBuf> {
    let d = parent.join(format!(".cost-{}", std::process::id()));
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}

fn compare(ours: &Path, theirs: &Path, augment: bool) -> Result<()> {
    if !augment {
        print!("{}", compare_steps(&read_report(ours)?, &read_report(theirs)?));
        return Ok(());
    }
    let (a, b): (AugmentReport, AugmentReport) = (read_report(ours)?, read_report(theirs)?);
    println!(
        "one core, {} images at {}px, two views each (img/s; ratio = ours / theirs):",
        a.images, a.size
    );
    println!("  {:<34} {:>12} {:>12} {:>7}", "", a.implementation, b.implementation, "ratio");
    let row = |name: &str, x: f64, y: f64| {
        if x > 0.0 && y > 0.0 {
            println!("  {name:<34} {x:>12.1} {y:>12.1} {:>6.2}x", x / y);
        }
    };
    row("augment (decoded beforehand)", a.augment_img_per_s, b.augment_img_per_s);
    row("decode + augment", a.decode_augment_img_per_s, b.decode_augment_img_per_s);
    row(
        "decode + augment, DCT scaling (ours)",
        a.decode_augment_dct_img_per_s,
        b.decode_augment_img_per_s,
    );
    Ok(())
}

fn write_json(path: Option<&Path>, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    println!("{text}");
    if let Some(p) = path {
        crate::io::atomic::write_atomic(p, format!("{text}\n").as_bytes()).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// `moco device-check`: exit 1 when any op disagrees with the CPU path.
pub fn device_check(g: &Global) -> Result<ExitCode> {
    let device = make_device(g.device.as_deref().unwrap_or("auto"))?;
    let checks = crate::devcheck::run_checks(&device)?;
    print!("{}", crate::devcheck::report(&device, &checks));
    Ok(if checks.iter().all(|c| c.ok()) {
        ExitCode::Ok
    } else {
        ExitCode::Error
    })
}

/// `moco config`: print the resolved, validated config.
pub fn config(a: ConfigArgs) -> Result<ExitCode> {
    print!("{}", load_config(a.config.as_deref(), &a.set)?.to_toml());
    Ok(ExitCode::Ok)
}
