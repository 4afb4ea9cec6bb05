//! `moco data download`: fetch an official dataset archive, verify its published MD5, unpack it.
//!
//! The archive streams to `<dir>/.partial/<archive>`; an interrupted download is resumed with an
//! HTTP `Range` request when the server supports it (else restarted). 5xx answers and connection
//! errors are retried with exponential backoff. The whole archive's MD5 must match the published
//! one (a mismatch deletes it). It is unpacked into `<dir>/.partial/<folder>.unpack/`, entries
//! with absolute paths, `..` or links rejected, and the dataset folder is renamed into
//! `<dir>/<folder>` only when whole, holding a [`MARKER`] file with the checksum: a killed run
//! leaves no folder that passes for a dataset, and a complete one is not downloaded again.

use crate::config::DataSource;
use md5::{Digest, Md5};
use std::fs::File;
use std::io::{BufReader, IsTerminal, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// One downloadable dataset: where the official archive lives and what it unpacks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Name on the command line (`cifar10`, `cifar100`, `stl10`).
    pub name: &'static str,
    /// Human-readable name.
    pub title: &'static str,
    /// Official URL of the archive.
    pub url: &'static str,
    /// Published MD5 of the archive (lowercase hex).
    pub md5: &'static str,
    /// Size of the archive in bytes.
    pub size: u64,
    /// File name of the archive.
    pub archive: &'static str,
    /// Top-level folder inside the archive (the dataset folder).
    pub folder: &'static str,
    /// Files the dataset folder must hold after unpacking.
    pub files: &'static [&'static str],
    /// The `data.source` that reads the folder.
    pub data_source: DataSource,
}

/// The official archives.
///
/// - CIFAR-10/100 binary: URL, MD5 and the "162 MB"/"161 MB" sizes from the table on
///   <https://www.cs.toronto.edu/~kriz/cifar.html> ("binary version (suitable for C programs)");
///   exact byte counts as served (170,052,171 and 168,513,733).
/// - STL-10 binary: URL and `tgz_md5` from torchvision's `torchvision/datasets/stl10.py`
///   (`STL10.url`, `STL10.tgz_md5`; the STL-10 page <https://cs.stanford.edu/~acoates/stl10/>
///   publishes no checksum); 2,640,397,119 bytes as served.
pub const SOURCES: [Source; 3] = [
    Source {
        name: "cifar10",
        title: "CIFAR-10 (binary version)",
        url: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        md5: "c32a1d4ab5d03f1284b67883e8d87530",
        size: 170_052_171,
        archive: "cifar-10-binary.tar.gz",
        folder: "cifar-10-batches-bin",
        files: &[
            "data_batch_1.bin",
            "data_batch_2.bin",
            "data_batch_3.bin",
            "data_batch_4.bin",
            "data_batch_5.bin",
            "test_batch.bin",
        ],
        data_source: DataSource::CifarBin,
    },
    Source {
        name: "cifar100",
        title: "CIFAR-100 (binary version)",
        url: "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
        md5: "03b5dce01913d631647c71ecec9e9cb8",
        size: 168_513_733,
        archive: "cifar-100-binary.tar.gz",
        folder: "cifar-100-binary",
        files: &["train.bin", "test.bin"],
        data_source: DataSource::CifarBin,
    },
    Source {
        name: "stl10",
        title: "STL-10 (binary version)",
        url: "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
        md5: "91f7769df0f17e558f3565bffb0c7dfb",
        size: 2_640_397_119,
        archive: "stl10_binary.tar.gz",
        folder: "stl10_binary",
        files: &["train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "unlabeled_X.bin"],
        data_source: DataSource::Stl10,
    },
];

/// The source named `name` (`cifar10`, `cifar100`, `stl10`).
pub fn source(name: &str) -> Option<&'static Source> {
    SOURCES.iter().find(|s| s.name == name)
}

/// File written into a dataset folder once it is complete: `md5 <hex>` and `url <url>` lines.
pub const MARKER: &str = ".moco-download";

/// How to download.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// Fetch from this URL instead of the official one (a mirror; tests).
    pub url: Option<String>,
    /// Expect this MD5 instead of the published one (32 hex digits). The published size is then
    /// not assumed either.
    pub md5: Option<String>,
    /// Tries of a request before giving up on 5xx (and 408, 429) answers and connection errors
    /// (a try that received bytes does not count).
    pub attempts: usize,
    /// Wait before the first retry, doubled before each further one.
    pub backoff: Duration,
    /// Limit on connecting and on each wait for the server (not on the whole download).
    pub timeout: Duration,
    /// Draw a progress bar (only when stderr is a terminal) and print status lines to stderr.
    pub progress: bool,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        Self {
            url: None,
            md5: None,
            attempts: 5,
            backoff: Duration::from_secs(2),
            timeout: Duration::from_secs(60),
            progress: true,
        }
    }
}

/// Why a download failed; each names the URL or the file.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The server answered with an error status (5xx, 408 or 429 after every retry; another
    /// status at once).
    #[error("GET {url}: HTTP {status} (gave up after {attempts} attempt(s))")]
    Http {
        /// URL.
        url: String,
        /// Status code of the last answer.
        status: u16,
        /// Tries made.
        attempts: usize,
    },
    /// Connecting or reading failed on every try.
    #[error("GET {url}: {message} (gave up after {attempts} attempt(s))")]
    Network {
        /// URL.
        url: String,
        /// The error and its causes.
        message: String,
        /// Tries made.
        attempts: usize,
    },
    /// The archive is not the expected one (corrupt, truncated, or another file); it was deleted.
    #[error("{path}: MD5 {actual} does not match the expected {expected} (downloaded from {url}); the file was deleted, run again to fetch it afresh")]
    Checksum {
        /// The archive.
        path: PathBuf,
        /// URL it came from.
        url: String,
        /// Expected MD5.
        expected: String,
        /// MD5 of the file.
        actual: String,
    },
    /// File system error.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The archive does not unpack to the expected dataset (bad entry, missing files).
    #[error("{path}: {message}")]
    Archive {
        /// The archive.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The dataset folder exists but was not written whole by this command (or holds another
    /// archive); it is left alone.
    #[error("{path}: {message}")]
    Exists {
        /// The folder.
        path: PathBuf,
        /// What is there.
        message: String,
    },
    /// A checksum argument that is not an MD5.
    #[error("--md5 {0:?}: expected 32 hexadecimal digits")]
    BadMd5(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DownloadError + '_ {
    move |source| DownloadError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// MD5 of a file, lowercase hex.
pub fn file_md5(path: &Path) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The MD5 recorded in a dataset folder's [`MARKER`], if any.
pub fn recorded_md5(folder: &Path) -> Option<String> {
    let text = std::fs::read_to_string(folder.join(MARKER)).ok()?;
    text.lines().find_map(|l| l.strip_prefix("md5 ")).map(|s| s.trim().to_string())
}

/// Download `src` into `dir` (see the module docs) and return the dataset folder
/// `<dir>/<src.folder>`. A folder already completed by an earlier call with the same checksum
/// is returned without any request.
pub fn download(src: &Source, dir: &Path, opts: &DownloadOptions) -> Result<PathBuf, DownloadError> {
    let url = opts.url.clone().unwrap_or_else(|| src.url.to_string());
    let md5 = match &opts.md5 {
        Some(m) if m.len() == 32 && m.chars().all(|c| c.is_ascii_hexdigit()) => m.to_ascii_lowercase(),
        Some(m) => return Err(DownloadError::BadMd5(m.clone())),
        None => src.md5.to_string(),
    };
    let size = if opts.md5.is_some() { None } else { Some(src.size) };
    let say = |msg: String| {
        if opts.progress {
            eprintln!("{}: {msg}", src.name);
        }
    };
    let target = dir.join(src.folder);
    if target.exists() {
        return match recorded_md5(&target) {
            Some(m) if m == md5 => {
                say(format!("{} is already complete (MD5 {md5})", target.display()));
                Ok(target)
            }
            Some(m) => Err(DownloadError::Exists {
                path: target,
                message: format!("holds another download (MD5 {m}, expected {md5}); remove it to download again"),
            }),
            None => Err(DownloadError::Exists {
                path: target,
                message: format!("exists but was not completed by `moco data download` (no {MARKER}); remove it to download again"),
            }),
        };
    }
    let partial_dir = dir.join(".partial");
    std::fs::create_dir_all(&partial_dir).map_err(io_err(&partial_dir))?;
    let result = fetch_and_unpack(src, &url, &md5, size, &partial_dir, &target, opts);
    let _ = std::fs::remove_dir(&partial_dir); // only when empty: a resumable archive stays
    result?;
    say(format!("wrote {}", target.display()));
    Ok(target)
}

/// The body of [`download`]: the archive fetched into `partial_dir`, its checksum checked, the
/// dataset folder unpacked beside it and renamed to `target`.
fn fetch_and_unpack(
    src: &Source,
    url: &str,
    md5: &str,
    size: Option<u64>,
    partial_dir: &Path,
    target: &Path,
    opts: &DownloadOptions,
) -> Result<(), DownloadError> {
    let archive = partial_dir.join(src.archive);
    if opts.progress {
        eprintln!("{}: {url} -> {}", src.name, archive.display());
    }
    fetch(url, &archive, md5, size, opts)?;
    let actual = file_md5(&archive).map_err(io_err(&archive))?;
    if actual != md5 {
        let _ = std::fs::remove_file(&archive);
        return Err(DownloadError::Checksum {
            path: archive,
            url: url.into(),
            expected: md5.into(),
            actual,
        });
    }
    if opts.progress {
        eprintln!("{}: MD5 {md5} verified; unpacking", src.name);
    }
    let tmp = partial_dir.join(format!("{}.unpack", src.folder));
    let unpacked = unpack_checked(&archive, &tmp, src).and_then(|folder| {
        let marker = folder.join(MARKER);
        std::fs::write(&marker, format!("md5 {md5}\nurl {url}\n")).map_err(io_err(&marker))?;
        std::fs::rename(&folder, target).map_err(io_err(target))
    });
    let _ = std::fs::remove_dir_all(&tmp);
    if let Err(e) = unpacked {
        if matches!(e, DownloadError::Archive { .. }) {
            // Verified yet unusable: nothing a rerun could fix by resuming.
            let _ = std::fs::remove_file(&archive);
        }
        return Err(e);
    }
    let _ = std::fs::remove_file(&archive);
    Ok(())
}

/// The config lines that point a run at a downloaded dataset folder.
pub fn config_lines(src: &Source, folder: &Path) -> Vec<String> {
    let mut lines = vec![
        format!("data.source = \"{}\"", src.data_source.as_str()),
        format!("data.path = {}", toml::Value::String(folder.display().to_string())),
    ];
    if src.data_source == DataSource::Stl10 {
        lines.push("data.pretrain_split = \"train+unlabeled\"".into());
        lines.push("data.image_size = 96".into());
    }
    lines
}

/// An attempt's failure: worth retrying or not.
enum Failure {
    Retry(DownloadError),
    Fatal(DownloadError),
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

fn is_loopback(url: &str) -> bool {
    let Some(host) = reqwest::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_owned)) else {
        return false;
    };
    let ip = host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>();
    host == "localhost" || ip.is_ok_and(|ip| ip.is_loopback())
}

/// The download's progress bar: drawn (on a terminal, with `progress`) from the first answer on,
/// once its length is known.
struct Bar {
    pb: indicatif::ProgressBar,
    show: bool,
}

impl Bar {
    fn new(opts: &DownloadOptions, name: &str) -> Bar {
        let pb = indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::hidden());
        pb.set_style(
            indicatif::ProgressStyle::with_template("{prefix:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        pb.set_prefix(name.to_string());
        Bar {
            pb,
            show: opts.progress && std::io::stderr().is_terminal(),
        }
    }

    /// A transfer of `total` bytes (if known) starts at byte `pos`.
    fn start(&self, total: Option<u64>, pos: u64) {
        if let Some(total) = total {
            self.pb.set_length(total);
        }
        self.pb.set_position(pos);
        if self.show && self.pb.is_hidden() {
            self.pb.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        }
    }
}

/// Bring `archive` to the whole file (resuming, retrying), ready for the checksum.
fn fetch(url: &str, archive: &Path, md5: &str, size: Option<u64>, opts: &DownloadOptions) -> Result<(), DownloadError> {
    let have = std::fs::metadata(archive).map(|m| m.len()).unwrap_or(0);
    if let Some(size) = size {
        if have > size {
            std::fs::remove_file(archive).map_err(io_err(archive))?;
        } else if have == size && file_md5(archive).map_err(io_err(archive))? == md5 {
            return Ok(()); // a whole archive left by a run killed before unpacking
        }
    }
    let mut builder = reqwest::blocking::Client::builder()
        .user_agent(concat!("moco-harness/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(opts.timeout)
        .timeout(opts.timeout); // blocking reqwest: a limit per wait (headers, each read)
    if is_loopback(url) {
        builder = builder.no_proxy();
    }
    let client = builder.build().map_err(|e| DownloadError::Network {
        url: url.into(),
        message: chain(&e),
        attempts: 1,
    })?;
    let name = archive.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let bar = Bar::new(opts, &name);
    let attempts = opts.attempts.max(1);
    let (mut failures, mut tries) = (0usize, 0usize);
    let result = loop {
        tries += 1;
        let before = std::fs::metadata(archive).map(|m| m.len()).unwrap_or(0);
        match fetch_once(&client, url, archive, md5, size, &bar, tries) {
            Ok(()) => break Ok(()),
            Err(Failure::Fatal(e)) => break Err(e),
            Err(Failure::Retry(e)) => {
                let after = std::fs::metadata(archive).map(|m| m.len()).unwrap_or(0);
                failures = if after > before { 1 } else { failures + 1 };
                if failures >= attempts {
                    break Err(e);
                }
                let wait = opts.backoff.saturating_mul(1 << (failures - 1).min(16));
                bar.pb.set_message(format!("retrying in {:.1}s: {e}", wait.as_secs_f64()));
                if opts.progress && !bar.show {
                    eprintln!("{e}; retrying in {:.1}s", wait.as_secs_f64());
                }
                std::thread::sleep(wait);
                bar.pb.set_message("");
            }
        }
    };
    bar.pb.finish_and_clear();
    result
}

/// One request of [`fetch`]: builds the errors that name its URL, archive and try number.
struct Attempt<'a> {
    /// The URL requested.
    url: &'a str,
    /// The archive being written.
    archive: &'a Path,
    /// Tries made so far, this one included.
    tries: usize,
}

impl Attempt<'_> {
    /// A request that did not go out: a refused connection or a name that does not resolve
    /// fails at once (no retry would change it); a timeout, or any other failure, is retried.
    fn send_failed(&self, e: &reqwest::Error) -> Failure {
        if e.is_connect() && !e.is_timeout() {
            return Failure::Fatal(DownloadError::Network {
                url: self.url.into(),
                message: format!(
                    "cannot connect ({}; not retried: is the host name right, and is there a network?)",
                    chain(e)
                ),
                attempts: self.tries,
            });
        }
        self.network(chain(e))
    }

    /// A network failure, worth retrying.
    fn network(&self, message: String) -> Failure {
        Failure::Retry(DownloadError::Network {
            url: self.url.into(),
            message,
            attempts: self.tries,
        })
    }

    /// A file-system failure on the archive, not worth retrying.
    fn fatal_io(&self, source: std::io::Error) -> Failure {
        Failure::Fatal(io_err(self.archive)(source))
    }

    /// An error status of the server.
    fn http(&self, status: u16) -> DownloadError {
        DownloadError::Http {
            url: self.url.into(),
            status,
            attempts: self.tries,
        }
    }
}

/// One request: ask for the rest of `archive` (a `Range` when part of it is there) and append
/// or rewrite it with the answer's body.
fn fetch_once(
    client: &reqwest::blocking::Client,
    url: &str,
    archive: &Path,
    md5: &str,
    size: Option<u64>,
    bar: &Bar,
    tries: usize,
) -> Result<(), Failure> {
    let at = Attempt { url, archive, tries };
    let have = std::fs::metadata(archive).map(|m| m.len()).unwrap_or(0);
    let mut req = client.get(url);
    if have > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let mut resp = req.send().map_err(|e| at.send_failed(&e))?;
    let len = resp.content_length();
    let Some(mut file) = open_for_answer(&at, &resp, have, md5)? else {
        return Ok(()); // the archive was already whole
    };
    let start = if resp.status().as_u16() == 206 { have } else { 0 };
    bar.start(len.map(|l| l + start).or(size), start);
    let got = copy_body(&at, &mut resp, &mut file, start, bar)?;
    file.sync_all().map_err(|e| at.fatal_io(e))?;
    match len {
        Some(l) if got < l => Err(at.network(format!("connection closed after {got} of {l} bytes"))),
        _ => Ok(()),
    }
}

/// The archive file to write the answer's body to, by the answer's status: appended to for
/// the asked-for range, rewritten for a whole file; None when a 416 shows the `have` bytes
/// already are the archive; retryable or fatal failures for the other answers.
fn open_for_answer(at: &Attempt, resp: &reqwest::blocking::Response, have: u64, md5: &str) -> Result<Option<File>, Failure> {
    let archive = at.archive;
    let status = resp.status().as_u16();
    let file = match status {
        206 if have > 0 => {
            let range = resp
                .headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !range.starts_with(&format!("bytes {have}-")) {
                // Not the range asked for: start over.
                std::fs::remove_file(archive).map_err(|e| at.fatal_io(e))?;
                return Err(at.network(format!("unexpected Content-Range {range:?} for bytes={have}-; restarting")));
            }
            std::fs::OpenOptions::new().append(true).open(archive).map_err(|e| at.fatal_io(e))?
        }
        200 => File::create(archive).map_err(|e| at.fatal_io(e))?, // no Range support: restart
        416 if have > 0 => {
            // We hold at least the whole file: either it is the archive, or stale bytes.
            if file_md5(archive).map_err(|e| at.fatal_io(e))? == md5 {
                return Ok(None);
            }
            std::fs::remove_file(archive).map_err(|e| at.fatal_io(e))?;
            return Err(Failure::Retry(at.http(status)));
        }
        408 | 429 | 500..=599 => return Err(Failure::Retry(at.http(status))),
        _ => return Err(Failure::Fatal(at.http(status))),
    };
    Ok(Some(file))
}

/// Copy the answer's body into `file` (which holds `start` bytes), advancing the bar; returns
/// the bytes received.
fn copy_body(at: &Attempt, body: &mut impl Read, file: &mut File, start: u64, bar: &Bar) -> Result<u64, Failure> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                file.flush().map_err(|e| at.fatal_io(e))?;
                return Err(at.network(format!("reading the body after {} bytes: {}", start + got, chain(&e))));
            }
        };
        file.write_all(&buf[..n]).map_err(|e| at.fatal_io(e))?;
        got += n as u64;
        bar.pb.inc(n as u64);
    }
    Ok(got)
}

/// Whether an archive entry's path stays inside the folder it is unpacked in.
fn safe_entry_path(p: &Path) -> bool {
    !p.as_os_str().is_empty() && p.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// Unpack `archive` (tar.gz) into a fresh `tmp` and return `tmp/<src.folder>` once it holds
/// every file of `src`.
fn unpack_checked(archive: &Path, tmp: &Path, src: &Source) -> Result<PathBuf, DownloadError> {
    let bad = |message: String| DownloadError::Archive {
        path: archive.to_path_buf(),
        message,
    };
    let _ = std::fs::remove_dir_all(tmp); // left by a killed run
    std::fs::create_dir_all(tmp).map_err(io_err(tmp))?;
    let file = File::open(archive).map_err(io_err(archive))?;
    let mut tar = tar::Archive::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 20, file)));
    let read_err = |e: std::io::Error| bad(format!("not a readable tar.gz: {e}"));
    for entry in tar.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let path = entry.path().map_err(read_err)?.into_owned();
        if !safe_entry_path(&path) {
            return Err(bad(format!(
                "entry {:?} is absolute or leaves the folder (..); refusing to unpack",
                path
            )));
        }
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            return Err(bad(format!(
                "entry {:?} is a {kind:?}, not a file or folder; refusing to unpack",
                path
            )));
        }
        if !entry.unpack_in(tmp).map_err(|e| bad(format!("unpacking {path:?}: {e}")))? {
            return Err(bad(format!("entry {path:?} leaves the folder; refusing to unpack")));
        }
    }
    let folder = tmp.join(src.folder);
    let missing: Vec<&str> = src.files.iter().copied().filter(|f| !folder.join(f).is_file()).collect();
    if !missing.is_empty() {
        return Err(bad(format!(
            "the archive has no {}/{} ({} expected)",
            src.folder,
            missing.join(", "),
            src.title
        )));
    }
    Ok(folder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_helpers() {
        for s in &SOURCES {
            assert_eq!(source(s.name), Some(s));
            assert!(s.md5.len() == 32 && s.md5.chars().all(|c| c.is_ascii_hexdigit()));
            assert!(s.url.ends_with(s.archive));
        }
        assert!(source("mnist").is_none());
        assert!(safe_entry_path(Path::new("./cifar-10-batches-bin/data_batch_1.bin")));
        assert!(!safe_entry_path(Path::new("/etc/passwd")));
        assert!(!safe_entry_path(Path::new("a/../../b")));
        assert!(!safe_entry_path(Path::new("")));
        assert!(is_loopback("http://127.0.0.1:8080/x.tar.gz"));
        assert!(is_loopback("http://localhost/x"));
        assert!(is_loopback("http://localhost:8000/x"));
        assert!(is_loopback("http://[::1]:8000/x"));
        assert!(!is_loopback("http://localhost.example.com/x"));
        assert!(!is_loopback("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"));
        let lines = config_lines(source("cifar10").unwrap(), Path::new("data/cifar-10-batches-bin"));
        assert_eq!(lines, ["data.source = \"cifar_bin\"", "data.path = \"data/cifar-10-batches-bin\""]);
        let lines = config_lines(source("stl10").unwrap(), Path::new("data/stl10_binary"));
        assert_eq!(lines[0], "data.source = \"stl10\"");
        assert!(lines.contains(&"data.pretrain_split = \"train+unlabeled\"".to_string()));
        // The lines are TOML a run config accepts.
        let cfg = crate::config::RunConfig::from_toml_str(&lines.join("\n"), "lines").unwrap();
        assert_eq!(cfg.data.source, DataSource::Stl10);
    }
}
