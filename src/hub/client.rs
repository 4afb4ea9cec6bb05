//! Push and pull through `hf-hub` 1.0 (blocking client). The endpoint comes from `HF_ENDPOINT`
//! (default huggingface.co), the token from `HF_TOKEN` or the token file `hf auth login` writes
//! (`$HF_HOME/token`, `HF_TOKEN_PATH`); it is sent as a bearer header and never printed,
//! logged or written anywhere by the harness. Large files (`*.safetensors`) go over xet, as the
//! real Hub requires; text files inline in the same commit.

use super::export::{export_run, CardOptions, Exported};
use super::{split_repo, HubError, HubRef};
use hf_hub::repository::CommitOperation;
use hf_hub::{HFClientBuilder, HFClientSync, HFError, HFRepositorySync, RepoTypeModel};
use std::path::{Path, PathBuf};

type Result<T> = std::result::Result<T, HubError>;

/// What `moco push` does.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// `namespace/name`.
    pub repo: String,
    /// Create the repo private (only when it does not exist yet).
    pub private: bool,
    /// Branch to commit to (created from `main` when missing); default `main`.
    pub revision: Option<String>,
    /// Tag the new commit.
    pub tag: Option<String>,
    /// Model-card options (dataset id, license).
    pub card: CardOptions,
}

/// What `moco push` did.
#[derive(Debug, Clone)]
pub struct PushReport {
    /// `namespace/name`.
    pub repo: String,
    /// Commit id, when the Hub returned one.
    pub commit: Option<String>,
    /// Commit URL, when returned.
    pub url: Option<String>,
    /// Files in the commit.
    pub files: Vec<String>,
    /// The exported run.
    pub exported: Exported,
}

/// A blocking client from the environment (endpoint, token, cache dir), and its endpoint.
pub fn client() -> Result<(HFClientSync, String)> {
    let inner = HFClientBuilder::new().build().map_err(|e| HubError::Client(e.to_string()))?;
    let endpoint = inner.endpoint().to_string();
    let sync = HFClientSync::from_inner(inner).map_err(|e| HubError::Client(e.to_string()))?;
    Ok((sync, endpoint))
}

/// Where hf-hub takes its token from (the same order as hf-hub 1.0's `resolve_token`):
/// `HF_TOKEN`, the file `HF_TOKEN_PATH` names, `$HF_HOME/token`. `None`: no token is sent.
/// Says where, never what.
pub fn token_source() -> Option<String> {
    let set = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if set("HF_HUB_DISABLE_IMPLICIT_TOKEN").is_some() {
        return None;
    }
    if set("HF_TOKEN").is_some() {
        return Some("HF_TOKEN".into());
    }
    let file_has_token = |p: &Path| std::fs::read_to_string(p).is_ok_and(|t| !t.trim().is_empty());
    if let Some(p) = set("HF_TOKEN_PATH").map(PathBuf::from).filter(|p| file_has_token(p)) {
        return Some(format!("the token file {} (HF_TOKEN_PATH)", p.display()));
    }
    let home_file = hf_hub::hf_home().join("token");
    file_has_token(&home_file).then(|| format!("the token file {}", home_file.display()))
}

/// Whether a request reads (pull, hf://) or writes (push).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Download.
    Read,
    /// Create a repo, a branch, a commit or a tag.
    Write,
}

/// What to do about an hf-hub error, given what was sent: no token, a rejected one, or one
/// without the access asked for.
fn hint(e: &HFError, access: Access, token: Option<&str>) -> String {
    let write = access == Access::Write;
    match (e, token) {
        (HFError::AuthRequired { .. }, None) if write => {
            "; no token was sent: set HF_TOKEN (or run `hf auth login`) to a token with write access to this namespace".into()
        }
        (HFError::AuthRequired { .. }, None) => "; no token was sent: a private or gated repo needs HF_TOKEN (or `hf auth login`)".into(),
        (HFError::AuthRequired { .. }, Some(from)) => format!("; the Hub did not accept the token from {from}: check it (or replace it)"),
        (HFError::Forbidden { .. }, _) if write => "; the token is valid but may not write to this namespace".into(),
        (HFError::Forbidden { .. }, _) => "; the token is valid but may not read this repo (gated: accept its terms on the Hub)".into(),
        (HFError::RepoNotFound { .. }, None) => "; check the repo id (a private repo needs a token: HF_TOKEN)".into(),
        (HFError::RepoNotFound { .. }, Some(_)) => "; check the repo id".into(),
        (HFError::RevisionNotFound { .. }, _) => "; check --revision".into(),
        _ => String::new(),
    }
}

/// Turn an hf-hub error into a message that says what to do; never includes the token.
fn explain(e: HFError, what: &str, repo: &str, endpoint: &str, access: Access) -> HubError {
    let hint = hint(&e, access, token_source().as_deref());
    HubError::Request {
        what: what.into(),
        repo: repo.into(),
        endpoint: endpoint.into(),
        message: e.to_string(),
        hint,
    }
}

fn repo_handle(c: &HFClientSync, repo: &str) -> Result<HFRepositorySync<RepoTypeModel>> {
    let (ns, name) = split_repo(repo)?;
    Ok(c.model(ns, name))
}

/// Export `run_dir` and publish it in one commit; create the repo if needed; tag if asked.
pub fn push(run_dir: &Path, opts: &PushOptions) -> Result<PushReport> {
    split_repo(&opts.repo)?;
    if token_source().is_none() {
        return Err(HubError::NoToken(opts.repo.clone()));
    }
    let staging = staging_dir()?;
    let result = push_from(run_dir, opts, &staging);
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn staging_dir() -> Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("moco-push-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(HubError::io(&dir))?;
    Ok(dir)
}

fn push_from(run_dir: &Path, opts: &PushOptions, staging: &Path) -> Result<PushReport> {
    let card = CardOptions {
        repo: opts.repo.clone(),
        ..opts.card.clone()
    };
    let exported = export_run(run_dir, staging, &card)?;
    let (c, ep) = client()?;
    let write_err = |what: &str| {
        let what = what.to_string();
        let (repo, ep) = (opts.repo.clone(), ep.clone());
        move |e| explain(e, &what, &repo, &ep, Access::Write)
    };
    let revision = opts.revision.clone().unwrap_or_else(|| "main".into());
    let repo = repo_on_branch(&c, opts, &revision, &ep)?;
    let ops: Vec<CommitOperation> = exported
        .files
        .iter()
        .map(|f| CommitOperation::add_file(f.clone(), exported.dir.join(f)))
        .collect();
    let size: u64 = exported
        .files
        .iter()
        .filter_map(|f| std::fs::metadata(exported.dir.join(f)).ok())
        .map(|m| m.len())
        .sum();
    eprintln!(
        "pushing {} ({} files, {:.1} MB) to {ep}/{} @ {revision}",
        run_dir.display(),
        ops.len(),
        size as f64 / 1e6,
        opts.repo
    );
    let info = repo
        .create_commit()
        .operations(ops)
        .commit_message(format!("Upload MoCo encoder (epoch {})", exported.epoch))
        .revision(revision.clone())
        .send()
        .map_err(write_err("committing to"))?;
    if let Some(tag) = &opts.tag {
        let at = info.commit_oid.as_deref().unwrap_or(revision.as_str());
        repo.create_tag()
            .tag(tag)
            .revision(at)
            .send()
            .map_err(write_err(&format!("tagging {tag:?} in")))?;
    }
    Ok(PushReport {
        repo: opts.repo.clone(),
        commit: info.commit_oid,
        url: info.commit_url,
        files: exported.files.clone(),
        exported,
    })
}

/// The repo (created when missing) with `revision` as a branch (created from main when
/// missing).
fn repo_on_branch(c: &HFClientSync, opts: &PushOptions, revision: &str, ep: &str) -> Result<HFRepositorySync<RepoTypeModel>> {
    let write_err = |what: String| move |e| explain(e, &what, &opts.repo, ep, Access::Write);
    c.create_repository()
        .repo_id(&opts.repo)
        .repo_type(RepoTypeModel)
        .private(opts.private)
        .exist_ok(true)
        .send()
        .map_err(write_err("creating".into()))?;
    let repo = repo_handle(c, &opts.repo)?;
    if revision != "main" {
        let exists = repo
            .revision_exists()
            .revision(revision)
            .send()
            .map_err(write_err("looking up the branch of".into()))?;
        if !exists {
            repo.create_branch()
                .branch(revision)
                .send()
                .map_err(write_err(format!("creating branch {revision:?} of")))?;
        }
    }
    Ok(repo)
}

/// Download every file of a repo revision into the Hub cache; returns the snapshot folder.
pub fn pull(r: &HubRef) -> Result<PathBuf> {
    let (c, ep) = client()?;
    let repo = repo_handle(&c, &r.repo)?;
    repo.snapshot_download()
        .maybe_revision(r.revision.clone())
        .send()
        .map_err(|e| explain(e, "downloading", &r.repo, &ep, Access::Read))
}

/// The cached path of one file of a repo revision (downloaded when missing).
pub fn fetch_file(r: &HubRef, file: &str) -> Result<PathBuf> {
    let (c, ep) = client()?;
    let repo = repo_handle(&c, &r.repo)?;
    repo.download_file()
        .filename(file)
        .maybe_revision(r.revision.clone())
        .send()
        .map_err(|e| {
            let at = r.revision.as_deref().map(|v| format!("@{v}")).unwrap_or_default();
            explain(
                e,
                &format!("hf://{}{at}: downloading {file} of", r.repo),
                &r.repo,
                &ep,
                Access::Read,
            )
        })
}
