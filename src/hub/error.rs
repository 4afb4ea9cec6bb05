//! The one error of the Hub layer. Messages say what to do and never include the token.

use crate::io::checkpoint::CheckpointError;
use crate::io::error::FileError;
use std::path::PathBuf;

/// Why a push, pull, `hf://` reference or export failed.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// A network command in a build without the `hub` feature.
    #[error("{0}: this binary is built without the `hub` feature (cargo build --release, default features)")]
    Disabled(String),
    /// A malformed repo id or `hf://` reference.
    #[error("{0}")]
    BadRef(String),
    /// hf-hub could not build a client from the environment.
    #[error("cannot set up the Hub client: {0}")]
    Client(String),
    /// A request the Hub refused or that did not reach it.
    #[error("{what} {repo} at {endpoint} failed: {message}{hint}")]
    Request {
        /// What was being done ("committing to", "downloading model.safetensors of").
        what: String,
        /// `namespace/name`.
        repo: String,
        /// The Hub endpoint.
        endpoint: String,
        /// hf-hub's message.
        message: String,
        /// What to do about it (starts with "; " when present).
        hint: String,
    },
    /// A push with no token to send (checked before any request).
    #[error("pushing to {0} needs a Hugging Face token with write access, and none is set: set HF_TOKEN or run `hf auth login` (token file $HF_HOME/token)")]
    NoToken(String),
    /// The run has nothing to publish.
    #[error("{path}: {message}")]
    Export {
        /// Run directory or checkpoint.
        path: PathBuf,
        /// What is missing.
        message: String,
    },
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// File or folder.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The run's checkpoint could not be read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The run's metrics could not be read.
    #[error(transparent)]
    File(#[from] FileError),
}

impl HubError {
    /// `Io` for `path`, as a closure for `map_err`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> HubError {
        let path = path.into();
        move |source| HubError::Io { path, source }
    }
}
