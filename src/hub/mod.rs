//! Publishing encoders on the Hugging Face Hub and reading them back.
//!
//! - [`export`]: the files of a published encoder, made from a run directory (no network).
//! - `client` (feature `hub`): `moco push`, `moco pull`, and `hf://` checkpoint references.
//! - [`error`]: the layer's one error type, [`HubError`].
//!
//! Every command that takes a checkpoint also takes `hf://NAMESPACE/NAME[@REVISION]`: the
//! repo's `model.safetensors` is fetched into the Hub cache and read like a run checkpoint.

#[cfg(feature = "hub")]
pub mod client;
pub mod error;
pub mod export;

pub use error::HubError;
use std::path::{Path, PathBuf};

type Result<T> = std::result::Result<T, HubError>;

/// `hf://NAMESPACE/NAME[@REVISION]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRef {
    /// `namespace/name`.
    pub repo: String,
    /// Branch, tag or commit; `None` = main.
    pub revision: Option<String>,
}

impl HubRef {
    /// Parse `hf://ns/name[@rev]` (or plain `ns/name[@rev]` when `scheme_optional`).
    pub fn parse(s: &str, scheme_optional: bool) -> Result<Option<HubRef>> {
        let rest = match s.strip_prefix("hf://") {
            Some(r) => r,
            None if scheme_optional => s,
            None => return Ok(None),
        };
        let (repo, revision) = match rest.split_once('@') {
            Some((r, v)) if !v.is_empty() => (r, Some(v.to_string())),
            Some(_) => return Err(HubError::BadRef(format!("{s:?}: empty revision after '@'"))),
            None => (rest, None),
        };
        if let Err(e) = split_repo(repo) {
            return Err(HubError::BadRef(format!("{s:?}: expected hf://NAMESPACE/NAME[@REVISION] ({e})")));
        }
        Ok(Some(HubRef {
            repo: repo.to_string(),
            revision,
        }))
    }
}

/// Split and check a repo id `namespace/name` (letters, digits, '-', '_', '.'; no leading or
/// trailing '-'/'.', no '--' or '..'; at most 96 characters each).
pub fn split_repo(repo: &str) -> Result<(String, String)> {
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 96
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && !s.starts_with(['-', '.'])
            && !s.ends_with(['-', '.'])
            && !s.contains("--")
            && !s.contains("..")
    };
    match repo.split_once('/') {
        Some((ns, name)) if ok(ns) && ok(name) => Ok((ns.to_string(), name.to_string())),
        _ => Err(HubError::BadRef(format!(
            "repo id {repo:?}: expected NAMESPACE/NAME (letters, digits, '-', '_', '.'; no '--' or '..')"
        ))),
    }
}

/// A local checkpoint path for `arg`: itself, or for `hf://…` the cached `model.safetensors`.
pub fn resolve_checkpoint(arg: &Path) -> Result<PathBuf> {
    let s = arg.to_string_lossy();
    match HubRef::parse(&s, false)? {
        None => Ok(arg.to_path_buf()),
        Some(r) => fetch_model(&r),
    }
}

/// True when built with the `hub` feature (push, pull, hf://, data download).
pub const ENABLED: bool = cfg!(feature = "hub");

/// The error every network command gives in a build without the `hub` feature.
pub fn disabled(what: &str) -> HubError {
    HubError::Disabled(what.into())
}

#[cfg(feature = "hub")]
fn fetch_model(r: &HubRef) -> Result<PathBuf> {
    client::fetch_file(r, "model.safetensors")
}

#[cfg(not(feature = "hub"))]
fn fetch_model(r: &HubRef) -> Result<PathBuf> {
    Err(disabled(&format!("hf://{}", r.repo)))
}

#[cfg(test)]
mod tests {
    use super::HubRef;

    #[test]
    fn parses_hub_refs() {
        assert_eq!(HubRef::parse("runs/ckpt.safetensors", false).unwrap(), None);
        let r = HubRef::parse("hf://me/moco@epoch-4", false).unwrap().unwrap();
        assert_eq!((r.repo.as_str(), r.revision.as_deref()), ("me/moco", Some("epoch-4")));
        let r = HubRef::parse("me/moco", true).unwrap().unwrap();
        assert_eq!(r.revision, None);
        for bad in [
            "hf://me",
            "hf://me/moco/x",
            "hf://me/moco@",
            "hf:///moco",
            "hf://me/bad name",
            "hf://me/a--b",
        ] {
            assert!(HubRef::parse(bad, false).is_err(), "{bad}");
        }
    }
}
