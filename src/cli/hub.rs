//! `moco push`, `moco pull`, and publishing a sweep's runs (`moco sweep --push`).

use super::ExitCode;
use crate::hub::export::{export_run, CardOptions};
use crate::io::run_dir::RunDir;
use crate::io::table::Row;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// Arguments of `moco push`.
#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// Run directory (holding checkpoint.safetensors).
    pub run_dir: PathBuf,
    /// Target model repo, NAMESPACE/NAME (created when missing).
    #[arg(long)]
    pub repo: String,
    /// Create the repo private.
    #[arg(long)]
    pub private: bool,
    /// Branch to commit to (created from main when missing).
    #[arg(long, value_name = "BRANCH")]
    pub revision: Option<String>,
    /// Tag the commit (e.g. epoch-200).
    #[arg(long)]
    pub tag: Option<String>,
    /// Hub dataset id for the card (default: guessed, e.g. uoft-cs/cifar10 for CIFAR-10).
    #[arg(long)]
    pub dataset_id: Option<String>,
    /// Only write the files into this folder; no network.
    #[arg(long, value_name = "DIR")]
    pub export_only: Option<PathBuf>,
    /// Write --export-only's files even into a run directory.
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `moco pull`.
#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// NAMESPACE/NAME or hf://NAMESPACE/NAME[@REVISION].
    pub repo: String,
    /// Branch, tag or commit.
    #[arg(long)]
    pub revision: Option<String>,
}

/// `moco push`: publish the run (or only write its files with `--export-only`).
pub fn push(a: PushArgs) -> Result<ExitCode> {
    let card = CardOptions {
        repo: a.repo.clone(),
        dataset_id: a.dataset_id,
        license: None,
    };
    if let Some(out) = a.export_only {
        if !a.force && RunDir::new(&out).config().exists() {
            bail!(
                "refusing to write into {}: it is a run directory (its metrics.csv would be replaced); choose another folder, or pass --force",
                out.display()
            );
        }
        let ex = export_run(&a.run_dir, &out, &card)?;
        for f in &ex.files {
            println!("{}", out.join(f).display());
        }
        return Ok(ExitCode::Ok);
    }
    push_run(&a.run_dir, &a.repo, a.private, a.revision, a.tag, card)
}

/// `moco pull`.
pub fn pull(a: PullArgs) -> Result<ExitCode> {
    pull_repo(&a.repo, a.revision)
}

/// `moco push` (feature `hub`).
#[cfg(feature = "hub")]
pub fn push_run(
    run_dir: &Path,
    repo: &str,
    private: bool,
    revision: Option<String>,
    tag: Option<String>,
    card: CardOptions,
) -> Result<ExitCode> {
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
    Ok(ExitCode::Ok)
}

/// `moco pull` (feature `hub`).
#[cfg(feature = "hub")]
fn pull_repo(repo: &str, revision: Option<String>) -> Result<ExitCode> {
    use anyhow::Context;
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
    Ok(ExitCode::Ok)
}

/// `moco sweep --push`: publish every finished run as PREFIX-<run id>; exit code PushFailed if any failed.
#[cfg(feature = "hub")]
pub fn push_sweep(dir: &Path, rows: &[Row], prefix: &str) -> Result<ExitCode> {
    let mut code = ExitCode::Ok;
    for row in rows {
        let (Some(id), Some(status)) = (row.get("run_id"), row.get("status")) else {
            continue;
        };
        if status != "ok" {
            eprintln!("push: {id} is {status}; not published");
            continue;
        }
        let repo = format!("{prefix}-{id}");
        let card = CardOptions {
            repo: repo.clone(),
            ..Default::default()
        };
        if let Err(e) = push_run(&dir.join(id), &repo, false, None, None, card) {
            eprintln!("push: {id}: {e:#}");
            code = ExitCode::PushFailed;
        }
    }
    Ok(code)
}

/// `moco push` in a build without the `hub` feature: an error that says so.
#[cfg(not(feature = "hub"))]
pub fn push_run(_: &Path, _: &str, _: bool, _: Option<String>, _: Option<String>, _: CardOptions) -> Result<ExitCode> {
    Err(crate::hub::disabled("moco push").into())
}

#[cfg(not(feature = "hub"))]
fn pull_repo(_: &str, _: Option<String>) -> Result<ExitCode> {
    Err(crate::hub::disabled("moco pull").into())
}

/// `moco sweep --push` in a build without the `hub` feature (refused before the sweep runs).
#[cfg(not(feature = "hub"))]
pub fn push_sweep(_: &Path, _: &[Row], _: &str) -> Result<ExitCode> {
    unreachable!("--push is rejected before the sweep runs in a build without `hub`")
}
