//! The one error of the file layer: which file, and what went wrong with it.

use std::path::{Path, PathBuf};

/// Reading or writing one of the harness's own files (metrics.csv, summary.json, runs.csv, …).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file system refused.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Another live process holds a run directory's writer lock.
    #[error("{path}: the run is being written by process {pid}; wait for it to end (or kill it), then retry")]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The holder's PID.
        pid: u32,
    },
    /// An output that would overwrite an input or a run's own file.
    #[error("refusing to write {path}: {what} (choose another output, or pass --force)")]
    Clash {
        /// The output.
        path: PathBuf,
        /// What it would overwrite.
        what: String,
    },
    /// The contents are not what the format says (CSV, JSON).
    #[error("{path}: {message}")]
    Format {
        /// File.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
}

impl FileError {
    /// `Io` for `path`, as a closure for `map_err`.
    pub fn io(path: &Path) -> impl Fn(std::io::Error) -> FileError + '_ {
        move |source| FileError::Io { path: path.into(), source }
    }

    /// `Format` for `path`, as a closure for `map_err`.
    pub fn format<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> FileError + '_ {
        move |e| FileError::Format {
            path: path.into(),
            message: e.to_string(),
        }
    }
}
