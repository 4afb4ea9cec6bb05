//! `moco data pack` (a class-balanced subset as CIFAR-10 binary) and `moco data download`.

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

/// Run a `moco data` subcommand.
pub fn data(what: DataCommand) -> Result<ExitCode> {
    match what {
        DataCommand::Pack { data, train, test, out } => pack(&data, train, test, &out),
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
