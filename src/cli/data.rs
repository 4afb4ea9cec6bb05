//! `moco data pack` (a class-balanced subset as CIFAR-10 binary, or an ImageFolder as tar
//! shards for clusters) and `moco data download`.

use super::eval::dataset_override;
use super::{load_config, ExitCode};
use crate::config::Override;
use crate::data;
use anyhow::Result;
use clap::Subcommand;
use std::path::PathBuf;

/// `moco data` subcommands.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Write a class-balanced subset of a CIFAR-10 dataset (ImageFolder or binary) in the
    /// CIFAR-10 binary format: 3,073 bytes per image (12,000 images ≈ 37 MB). With
    /// `--format shards`: an ImageFolder's train/ and test/ (or val/) re-encoded as JPEG
    /// (short side resized) into WebDataset tar shards plus index.json, read with
    /// `data.source = "shards"`.
    Pack {
        /// Source: an ImageFolder root (train/, test/) or a CIFAR binary folder (cifar_bin);
        /// an ImageFolder root (shards).
        #[arg(long)]
        data: String,
        /// Output folder (must not exist; shards: or be empty).
        #[arg(long)]
        out: PathBuf,
        /// What to write: `cifar_bin` (a class-balanced subset) or `shards`.
        #[arg(long, default_value = "cifar_bin", value_parser = ["cifar_bin", "shards"])]
        format: String,
        /// cifar_bin: training images to keep (0 = all), the same number per class [default: 10000].
        #[arg(long)]
        train: Option<usize>,
        /// cifar_bin: test images to keep (0 = all) [default: 2000].
        #[arg(long)]
        test: Option<usize>,
        /// Shard options.
        #[command(flatten)]
        shards: ShardArgs,
    },
    /// Download an official dataset archive (CIFAR-10/100 or STL-10 binary), verify its
    /// published MD5, unpack it whole or not at all, and print the config lines that use it.
    /// An interrupted download resumes; a complete dataset is not fetched again.
    #[cfg(feature = "hub")]
    Download {
        /// Which archive: cifar10, cifar100 or stl10.
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

/// The options of `moco data pack --format shards`.
#[derive(Debug, clap::Args)]
pub struct ShardArgs {
    /// shards: short side of the re-encoded images in pixels (smaller images are not upscaled).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    short_side: u32,
    /// shards: target size of a shard in MiB.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    shard_mb: u64,
    /// shards: JPEG quality, 1 to 100.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u8).range(1..=100))]
    quality: u8,
    /// shards: only the classes of this file (one folder name per line, as data.class_list).
    #[arg(long)]
    class_list: Option<PathBuf>,
    /// shards: seed of the one shuffle of each split's samples.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// shards: no progress bar.
    #[arg(long)]
    no_progress: bool,
}

/// Run a `moco data` subcommand.
pub fn data(what: DataCommand) -> Result<ExitCode> {
    match what {
        DataCommand::Pack {
            data,
            out,
            format,
            train,
            test,
            shards,
        } => match format.as_str() {
            "shards" if train.is_some() || test.is_some() => {
                anyhow::bail!("--train/--test apply to --format cifar_bin; a pack of shards holds every image")
            }
            "shards" => pack_shards(&data, &out, &shards),
            _ => pack(&data, train.unwrap_or(10000), test.unwrap_or(2000), &out),
        },
        #[cfg(feature = "hub")]
        DataCommand::Download { which, dir, url, md5 } => download(&which, &dir, url, md5),
    }
}

fn pack(source: &str, train: usize, test: usize, out: &std::path::Path) -> Result<ExitCode> {
    let mut set = dataset_override(source)?;
    set.push(Override {
        key: "data.train_limit".into(),
        value: toml::Value::Integer(train as i64),
    });
    set.push(Override {
        key: "data.test_limit".into(),
        value: toml::Value::Integer(test as i64),
    });
    let cfg = load_config(None, &set)?;
    let splits = data::load(&cfg.data, cfg.seed)?;
    data::cifar::write_cifar10_bin(out, &splits)?;
    println!(
        "wrote {} ({} train + {} test images, CIFAR-10 binary); use it with --set data.source=cifar_bin --set data.path={}",
        out.display(),
        splits.train.len(),
        splits.test.len(),
        out.display()
    );
    Ok(ExitCode::Ok)
}

fn pack_shards(source: &str, out: &std::path::Path, a: &ShardArgs) -> Result<ExitCode> {
    use crate::data::shards::pack::{pack, PackOptions};
    let opts = PackOptions {
        short_side: a.short_side,
        shard_bytes: a.shard_mb << 20,
        quality: a.quality,
        class_list: a.class_list.clone(),
        seed: a.seed,
    };
    let source = std::path::Path::new(source);
    let pb = crate::progress::bar(0, "packing".into(), !a.no_progress);
    let index = pack(source, out, &opts, &|n: usize, total: usize| {
        pb.set_length(total as u64);
        pb.inc(n as u64)
    })?;
    pb.finish_and_clear();
    for (name, split) in &index.splits {
        let bytes: u64 = split.shards.iter().map(|s| s.bytes).sum();
        println!(
            "{name}: {} samples ({}/) in {} shards, {:.1} MB",
            split.samples,
            split.source_split,
            split.shards.len(),
            bytes as f64 / 1e6
        );
    }
    println!(
        "wrote {} ({} classes, short side {}, JPEG quality {}); use it with --set data.source=shards --set data.path={}",
        out.display(),
        index.classes.len(),
        index.short_side,
        index.quality,
        out.display()
    );
    Ok(ExitCode::Ok)
}

#[cfg(feature = "hub")]
fn download(which: &str, dir: &std::path::Path, url: Option<String>, md5: Option<String>) -> Result<ExitCode> {
    use crate::data::download;
    use anyhow::Context;
    let src = download::source(which).with_context(|| format!("unknown dataset {which:?}"))?;
    let opts = download::DownloadOptions {
        url,
        md5,
        ..Default::default()
    };
    let folder = download::download(src, dir, &opts)?;
    println!("# {} in {}; use it with these config lines:", src.title, folder.display());
    for line in download::config_lines(src, &folder) {
        println!("{line}");
    }
    Ok(ExitCode::Ok)
}
