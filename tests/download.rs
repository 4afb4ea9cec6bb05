//! `moco data download` against a loopback HTTP server serving small archives in the real formats.

use md5::{Digest, Md5};
use moco_harness::config::{DataConfig, DataSource, PretrainSplit};
use moco_harness::data::download::{self, DownloadError, DownloadOptions, Source, MARKER};
use moco_harness::data::{self, UNLABELED};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// A std-only HTTP/1.1 server on 127.0.0.1: one thread per connection, one request each.

/// What the server answers, in order (the last one repeats).
#[derive(Clone)]
enum Reply {
    /// This status, empty body.
    Status(u16),
    /// The file; with `ranges`, `Range: bytes=N-` gets a 206 (or 416 past the end).
    File { bytes: Arc<Vec<u8>>, ranges: bool },
    /// Headers announcing the whole file, then only its first `after` bytes, then close.
    Cut { bytes: Arc<Vec<u8>>, after: usize },
}

/// One request as received.
#[derive(Debug, Clone)]
struct Request {
    path: String,
    range: Option<String>,
}

struct Server {
    url: String,
    log: Arc<Mutex<Vec<Request>>>,
    script: Arc<Mutex<Vec<Reply>>>,
}

impl Server {
    fn start(script: Vec<Reply>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/files/archive.tar.gz", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script));
        let (l, s) = (log.clone(), script.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (l, s) = (l.clone(), s.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &l, &s);
                });
            }
        });
        Server { url, log, script }
    }
    fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }
    fn set(&self, script: Vec<Reply>) {
        *self.script.lock().unwrap() = script;
    }
}

fn serve(stream: TcpStream, log: &Mutex<Vec<Request>>, script: &Mutex<Vec<Reply>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    log.lock().unwrap().push(Request {
        path,
        range: range.clone(),
    });
    let reply = {
        let mut s = script.lock().unwrap();
        if s.len() > 1 {
            s.remove(0)
        } else {
            s[0].clone()
        }
    };
    let mut out = stream;
    let head = |status: &str, len: usize, extra: &str| {
        format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\nContent-Type: application/gzip\r\n{extra}Connection: close\r\n\r\n")
    };
    match reply {
        Reply::Status(code) => out.write_all(head(&format!("{code} Scripted"), 0, "").as_bytes())?,
        Reply::File { bytes, ranges } => {
            let from = range
                .as_deref()
                .filter(|_| ranges)
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|n| n.parse::<usize>().ok());
            match from {
                Some(n) if n >= bytes.len() => out.write_all(
                    head(
                        "416 Range Not Satisfiable",
                        0,
                        &format!("Content-Range: bytes */{}\r\n", bytes.len()),
                    )
                    .as_bytes(),
                )?,
                Some(n) => {
                    let cr = format!(
                        "Content-Range: bytes {n}-{}/{}\r\nAccept-Ranges: bytes\r\n",
                        bytes.len() - 1,
                        bytes.len()
                    );
                    out.write_all(head("206 Partial Content", bytes.len() - n, &cr).as_bytes())?;
                    out.write_all(&bytes[n..])?;
                }
                None => {
                    out.write_all(head("200 OK", bytes.len(), "").as_bytes())?;
                    out.write_all(&bytes)?;
                }
            }
        }
        Reply::Cut { bytes, after } => {
            out.write_all(head("200 OK", bytes.len(), "").as_bytes())?;
            out.write_all(&bytes[..after])?;
            out.flush()?;
            let _ = out.shutdown(std::net::Shutdown::Both);
        }
    }
    out.flush()
}

// ---------------------------------------------------------------------------------------------
// Tiny archives in the official layouts.

fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    let mut dirs: Vec<&str> = Vec::new();
    for (path, data) in entries {
        let dir = path.split('/').next().unwrap();
        if !dirs.contains(&dir) {
            dirs.push(dir);
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            b.append_data(&mut h, format!("{dir}/"), std::io::empty()).unwrap();
        }
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// A tar.gz with one entry whose raw name is `name` (the tar crate's builder refuses `..` and
/// absolute names, as an attacker's tool would not).
fn tar_gz_raw_name(name: &str, data: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, data).unwrap();
    b.into_inner().unwrap().finish().unwrap()
}

fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A CIFAR record: label bytes, then R, G, B planes of 32×32 (row-major) from `f(c, row, col)`.
fn cifar_record(labels: &[u8], f: impl Fn(usize, usize, usize) -> u8) -> Vec<u8> {
    let mut r = labels.to_vec();
    for c in 0..3 {
        for y in 0..32 {
            for x in 0..32 {
                r.push(f(c, y, x));
            }
        }
    }
    r
}

fn pixel(i: usize) -> impl Fn(usize, usize, usize) -> u8 {
    move |c, y, x| (i * 7 + c * 50 + y + 2 * x) as u8
}

/// The CIFAR-10 binary archive: 5 batches of 2 images, a test batch of 1.
fn cifar10_archive() -> Vec<u8> {
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for b in 0..5 {
        let recs: Vec<u8> = (0..2)
            .flat_map(|j| cifar_record(&[((b * 2 + j) % 10) as u8], pixel(b * 2 + j)))
            .collect();
        files.push((format!("cifar-10-batches-bin/data_batch_{}.bin", b + 1), recs));
    }
    files.push(("cifar-10-batches-bin/test_batch.bin".into(), cifar_record(&[7], pixel(99))));
    files.push(("cifar-10-batches-bin/batches.meta.txt".into(), b"airplane\nautomobile\n".to_vec()));
    let entries: Vec<(&str, &[u8])> = files.iter().map(|(p, d)| (p.as_str(), d.as_slice())).collect();
    tar_gz(&entries)
}

fn cifar10() -> &'static Source {
    download::source("cifar10").unwrap()
}

fn opts(server: &Server, md5: &str) -> DownloadOptions {
    DownloadOptions {
        url: Some(server.url.clone()),
        md5: Some(md5.into()),
        attempts: 3,
        backoff: Duration::from_millis(5),
        timeout: Duration::from_secs(5),
        progress: false,
    }
}

fn file(bytes: &[u8], ranges: bool) -> Reply {
    Reply::File {
        bytes: Arc::new(bytes.to_vec()),
        ranges,
    }
}

/// Only the dataset folder is left in `dir` (no `.partial`).
fn assert_clean(dir: &Path, folder: &str) {
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec![folder.to_string()]);
}

/// Nothing that passes for a dataset is in `dir`.
fn assert_no_dataset(dir: &Path, folder: &str) {
    assert!(!dir.join(folder).exists(), "{folder} must not exist");
    let unpack = dir.join(".partial").join(format!("{folder}.unpack"));
    assert!(!unpack.exists(), "{} must not exist", unpack.display());
}

// ---------------------------------------------------------------------------------------------

#[test]
fn cifar10_is_downloaded_verified_unpacked_and_loads_then_not_fetched_again() {
    let t = Instant::now();
    let archive = cifar10_archive();
    let server = Server::start(vec![file(&archive, true)]);
    let dir = tempfile::tempdir().unwrap();
    let o = opts(&server, &md5_hex(&archive));
    let folder = download::download(cifar10(), dir.path(), &o).unwrap();
    assert_eq!(folder, dir.path().join("cifar-10-batches-bin"));
    assert_clean(dir.path(), "cifar-10-batches-bin");
    assert_eq!(download::recorded_md5(&folder).as_deref(), Some(md5_hex(&archive).as_str()));
    assert_eq!(server.requests().len(), 1);
    assert_eq!(server.requests()[0].path, "/files/archive.tar.gz");
    assert_eq!(server.requests()[0].range, None);

    let s = data::cifar::load_cifar_bin(&folder).unwrap();
    assert_eq!(s.train.len(), 10);
    assert_eq!(s.train.labels, (0..10).collect::<Vec<u32>>());
    assert_eq!(s.test.labels, vec![7]);
    for (i, img) in s.train.images.iter().enumerate() {
        let f = pixel(i);
        for (y, x) in [(0, 0), (5, 17), (31, 31)] {
            assert_eq!(
                &img.pixels[(y * 32 + x) * 3..][..3],
                &[f(0, y, x), f(1, y, x), f(2, y, x)],
                "image {i} ({y},{x})"
            );
        }
    }
    assert_eq!(
        s.test.images[0].pixels[..3],
        [pixel(99)(0, 0, 0), pixel(99)(1, 0, 0), pixel(99)(2, 0, 0)]
    );

    // The printed lines are a config that loads this folder.
    let lines = download::config_lines(cifar10(), &folder);
    assert_eq!(lines[0], "data.source = \"cifar_bin\"");
    let cfg = moco_harness::config::RunConfig::from_toml_str(&lines.join("\n"), "lines").unwrap();
    assert_eq!(cfg.data.path, folder);
    assert!(cfg.validate().is_ok());

    // Complete already: no request, even to a server that now only fails.
    server.set(vec![Reply::Status(500)]);
    assert_eq!(download::download(cifar10(), dir.path(), &o).unwrap(), folder);
    assert_eq!(server.requests().len(), 1);
    // A different checksum is another archive: refused, folder untouched.
    let other = DownloadOptions {
        md5: Some("0".repeat(32)),
        ..o.clone()
    };
    let e = download::download(cifar10(), dir.path(), &other).unwrap_err();
    assert!(
        matches!(e, DownloadError::Exists { .. }) && e.to_string().contains(&md5_hex(&archive)),
        "{e}"
    );
    assert_eq!(server.requests().len(), 1);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[test]
fn cifar100_and_stl10_archives_load_through_their_loaders() {
    let t = Instant::now();
    // CIFAR-100: <coarse><fine><3072>.
    let train: Vec<u8> = (0..3).flat_map(|i| cifar_record(&[1, 40 + i as u8], pixel(i))).collect();
    let test = cifar_record(&[2, 99], pixel(5));
    let archive = tar_gz(&[
        ("cifar-100-binary/train.bin", &train),
        ("cifar-100-binary/test.bin", &test),
        ("cifar-100-binary/fine_label_names.txt", b"apple\n"),
    ]);
    let server = Server::start(vec![file(&archive, true)]);
    let dir = tempfile::tempdir().unwrap();
    let folder = download::download(
        download::source("cifar100").unwrap(),
        dir.path(),
        &opts(&server, &md5_hex(&archive)),
    )
    .unwrap();
    let s = data::cifar::load_cifar_bin(&folder).unwrap();
    assert_eq!((s.train.labels.clone(), s.test.labels.clone()), (vec![40, 41, 42], vec![99]));
    assert_eq!(
        s.train.images[2].pixels[3 * 33..][..3],
        [pixel(2)(0, 1, 1), pixel(2)(1, 1, 1), pixel(2)(2, 1, 1)]
    );

    // STL-10: 96×96 planes stored column by column, labels 1..=10.
    let stl = |i: usize| move |c: usize, y: usize, x: usize| (i * 11 + c * 60 + y / 3 + x / 2) as u8;
    let stl_record = |i: usize| -> Vec<u8> {
        let f = stl(i);
        (0..3)
            .flat_map(|c| (0..96).flat_map(move |x| (0..96).map(move |y| f(c, y, x))))
            .collect()
    };
    let images = |ids: &[usize]| -> Vec<u8> { ids.iter().flat_map(|&i| stl_record(i)).collect() };
    let names = b"airplane\nbird\ncar\ncat\ndeer\ndog\nhorse\nmonkey\nship\ntruck\n";
    let (train_x, test_x, unl_x) = (images(&[0, 1, 2]), images(&[3, 4]), images(&[5, 6, 7, 8]));
    let archive = tar_gz(&[
        ("stl10_binary/class_names.txt", names),
        ("stl10_binary/train_X.bin", &train_x),
        ("stl10_binary/train_y.bin", &[3, 10, 1]),
        ("stl10_binary/test_X.bin", &test_x),
        ("stl10_binary/test_y.bin", &[2, 2]),
        ("stl10_binary/unlabeled_X.bin", &unl_x),
        ("stl10_binary/fold_indices.txt", b"0 1\n"),
    ]);
    server.set(vec![file(&archive, true)]);
    let stl10 = download::source("stl10").unwrap();
    let folder = download::download(stl10, dir.path(), &opts(&server, &md5_hex(&archive))).unwrap();
    assert_eq!(folder, dir.path().join("stl10_binary"));
    let lines = download::config_lines(stl10, &folder);
    let mut cfg = moco_harness::config::RunConfig::from_toml_str(&lines.join("\n"), "lines").unwrap();
    assert_eq!(
        (cfg.data.source, cfg.data.pretrain_split),
        (DataSource::Stl10, PretrainSplit::TrainUnlabeled)
    );
    cfg.data.test_limit = 0;
    let cfg = cfg.validate().unwrap();
    let splits = data::load(&cfg.data, 0).unwrap();
    assert_eq!(splits.train.labels, vec![2, 9, 0]);
    assert_eq!(splits.test.labels, vec![1, 1]);
    assert_eq!(splits.train.classes[7], "monkey");
    for (set, ids) in [(&splits.train, [0, 1, 2].as_slice()), (&splits.test, &[3, 4])] {
        for (img, &i) in set.images.iter().zip(ids) {
            assert_eq!((img.width, img.height), (96, 96));
            for (y, x) in [(0, 0), (0, 95), (40, 7), (95, 0)] {
                let f = stl(i);
                assert_eq!(
                    &img.pixels[(y * 96 + x) * 3..][..3],
                    &[f(0, y, x), f(1, y, x), f(2, y, x)],
                    "image {i} ({y},{x})"
                );
            }
        }
    }
    // Pre-training sets: the labelled split, the unlabeled images, or both; evaluation keeps
    // using `splits` (labelled train / test only).
    let with = |split: PretrainSplit, limit: usize| DataConfig {
        pretrain_split: split,
        train_limit: limit,
        ..cfg.data.clone()
    };
    let both = data::pretrain_set(&with(PretrainSplit::TrainUnlabeled, 0), &splits).unwrap();
    assert_eq!(both.labels, vec![2, 9, 0, UNLABELED, UNLABELED, UNLABELED, UNLABELED]);
    assert_eq!(both.images[3].pixels[..3], [stl(5)(0, 0, 0), stl(5)(1, 0, 0), stl(5)(2, 0, 0)]);
    let unl = data::pretrain_set(&with(PretrainSplit::Unlabeled, 2), &splits).unwrap();
    assert_eq!((unl.len(), unl.images[1].pixels[4]), (2, stl(6)(1, 0, 1)));
    assert_eq!(
        data::pretrain_set(&with(PretrainSplit::Train, 0), &splits).unwrap().labels,
        splits.train.labels
    );
    assert!(splits.train.labels.iter().chain(&splits.test.labels).all(|&l| l < 10));
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[test]
fn corrupt_and_truncated_archives_are_rejected_by_checksum_and_leave_no_dataset() {
    let t = Instant::now();
    let archive = cifar10_archive();
    let md5 = md5_hex(&archive);
    let mut corrupt = archive.clone();
    corrupt[archive.len() / 2] ^= 0x40;
    let truncated = archive[..archive.len() / 2].to_vec();
    for (what, served) in [("corrupt", corrupt), ("truncated", truncated)] {
        let server = Server::start(vec![file(&served, true)]);
        let dir = tempfile::tempdir().unwrap();
        let e = download::download(cifar10(), dir.path(), &opts(&server, &md5)).unwrap_err();
        let msg = e.to_string();
        match &e {
            DownloadError::Checksum {
                path, expected, actual, ..
            } => {
                assert_eq!(path, &dir.path().join(".partial").join("cifar-10-binary.tar.gz"), "{what}");
                assert_eq!(
                    (expected.as_str(), actual.as_str()),
                    (md5.as_str(), md5_hex(&served).as_str()),
                    "{what}"
                );
            }
            other => panic!("{what}: expected a checksum error, got {other}"),
        }
        assert!(
            msg.contains("cifar-10-binary.tar.gz") && msg.contains(&md5) && msg.contains(&md5_hex(&served)),
            "{msg}"
        );
        assert!(
            !dir.path().join(".partial").exists(),
            "{what}: the bad archive is deleted, .partial too"
        );
        assert_no_dataset(dir.path(), "cifar-10-batches-bin");
        assert_eq!(server.requests().len(), 1, "{what}: a checksum failure is not retried");
    }
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[test]
fn server_errors_are_retried_then_reported_with_status_and_url() {
    let t = Instant::now();
    let archive = cifar10_archive();
    let md5 = md5_hex(&archive);
    // 503 twice, then the file: success on the third try.
    let server = Server::start(vec![Reply::Status(503), Reply::Status(503), file(&archive, true)]);
    let dir = tempfile::tempdir().unwrap();
    download::download(cifar10(), dir.path(), &opts(&server, &md5)).unwrap();
    assert_eq!(server.requests().len(), 3);
    assert!(data::cifar::load_cifar_bin(&dir.path().join("cifar-10-batches-bin")).is_ok());

    // Always 500: three tries, then the status and the URL.
    let server = Server::start(vec![Reply::Status(500)]);
    let dir = tempfile::tempdir().unwrap();
    let e = download::download(cifar10(), dir.path(), &opts(&server, &md5)).unwrap_err();
    assert!(
        matches!(
            e,
            DownloadError::Http {
                status: 500,
                attempts: 3,
                ..
            }
        ),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("HTTP 500") && msg.contains(&server.url) && msg.contains("3 attempt"),
        "{msg}"
    );
    assert_eq!(server.requests().len(), 3);
    assert_no_dataset(dir.path(), "cifar-10-batches-bin");

    // A 4xx is not retried.
    let server = Server::start(vec![Reply::Status(404)]);
    let e = download::download(cifar10(), dir.path(), &opts(&server, &md5)).unwrap_err();
    assert!(e.to_string().contains("HTTP 404") && e.to_string().contains(&server.url), "{e}");
    assert_eq!(server.requests().len(), 1);

    // Connection refused: reported at once with the URL, not retried (issue 21: no retry
    // changes a refused connection or a name that does not resolve; timeouts and 5xx retry).
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/cifar-10-binary.tar.gz");
    let o = DownloadOptions {
        url: Some(url.clone()),
        md5: Some(md5.clone()),
        attempts: 2,
        backoff: Duration::from_millis(5),
        timeout: Duration::from_secs(2),
        progress: false,
    };
    let e = download::download(cifar10(), dir.path(), &o).unwrap_err();
    assert!(
        matches!(e, DownloadError::Network { attempts: 1, .. }) && e.to_string().contains(&url) && e.to_string().contains("not retried"),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[test]
fn a_killed_download_resumes_with_range_or_restarts() {
    let t = Instant::now();
    let archive = cifar10_archive();
    let md5 = md5_hex(&archive);
    let half = archive.len() / 2;
    let partial = |dir: &Path| {
        std::fs::create_dir_all(dir.join(".partial")).unwrap();
        std::fs::write(dir.join(".partial/cifar-10-binary.tar.gz"), &archive[..half]).unwrap();
    };
    // A partial file from a killed run: only the rest is asked for.
    let server = Server::start(vec![file(&archive, true)]);
    let dir = tempfile::tempdir().unwrap();
    partial(dir.path());
    download::download(cifar10(), dir.path(), &opts(&server, &md5)).unwrap();
    assert_eq!(server.requests()[0].range.as_deref(), Some(format!("bytes={half}-").as_str()));
    assert_eq!(server.requests().len(), 1);
    assert!(data::cifar::load_cifar_bin(&dir.path().join("cifar-10-batches-bin")).is_ok());
    assert_clean(dir.path(), "cifar-10-batches-bin");

    // A server without Range support: the whole file again, the partial one overwritten.
    let server = Server::start(vec![file(&archive, false)]);
    let dir = tempfile::tempdir().unwrap();
    partial(dir.path());
    download::download(cifar10(), dir.path(), &opts(&server, &md5)).unwrap();
    assert_eq!(server.requests().len(), 1);
    assert!(data::cifar::load_cifar_bin(&dir.path().join("cifar-10-batches-bin")).is_ok());

    // The connection drops mid-transfer: the next try resumes where it stopped.
    let cut = 1000.min(half);
    let server = Server::start(vec![
        Reply::Cut {
            bytes: Arc::new(archive.clone()),
            after: cut,
        },
        file(&archive, true),
    ]);
    let dir = tempfile::tempdir().unwrap();
    download::download(cifar10(), dir.path(), &opts(&server, &md5)).unwrap();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[1].range.as_deref(), Some(format!("bytes={cut}-").as_str()));
    assert!(data::cifar::load_cifar_bin(&dir.path().join("cifar-10-batches-bin")).is_ok());

    // The whole archive already there (killed before unpacking): the server says 416, the
    // file's checksum decides, nothing is fetched again.
    let server = Server::start(vec![file(&archive, true)]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(".partial")).unwrap();
    std::fs::write(dir.path().join(".partial/cifar-10-binary.tar.gz"), &archive).unwrap();
    // … and a half-unpacked folder from that killed run is not mistaken for the dataset.
    std::fs::create_dir_all(dir.path().join(".partial/cifar-10-batches-bin.unpack/cifar-10-batches-bin")).unwrap();
    download::download(cifar10(), dir.path(), &opts(&server, &md5)).unwrap();
    assert_eq!(
        server.requests()[0].range.as_deref(),
        Some(format!("bytes={}-", archive.len()).as_str())
    );
    assert_clean(dir.path(), "cifar-10-batches-bin");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[test]
fn unsafe_entries_missing_files_and_foreign_folders_are_refused() {
    let t = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    for name in ["../evil.bin", "/tmp/moco-download-evil.bin", "cifar-10-batches-bin/../../evil.bin"] {
        let archive = tar_gz_raw_name(name, b"gotcha");
        let server = Server::start(vec![file(&archive, true)]);
        let e = download::download(cifar10(), &root, &opts(&server, &md5_hex(&archive))).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, DownloadError::Archive { .. }) && msg.contains("refusing"),
            "{name}: {msg}"
        );
        assert!(!dir.path().join("evil.bin").exists() && !root.join("evil.bin").exists());
        assert_no_dataset(&root, "cifar-10-batches-bin");
        assert!(
            !root.join(".partial/cifar-10-binary.tar.gz").exists(),
            "an unusable archive is deleted"
        );
    }
    assert!(!Path::new("/tmp/moco-download-evil.bin").exists());

    // A well-formed archive without the dataset's files.
    let archive = tar_gz(&[("cifar-10-batches-bin/data_batch_1.bin", b"x")]);
    let server = Server::start(vec![file(&archive, true)]);
    let e = download::download(cifar10(), &root, &opts(&server, &md5_hex(&archive))).unwrap_err();
    assert!(e.to_string().contains("data_batch_2.bin"), "{e}");
    assert_no_dataset(&root, "cifar-10-batches-bin");

    // A folder this command did not complete is left alone, without any request.
    std::fs::create_dir_all(root.join("cifar-10-batches-bin")).unwrap();
    let server = Server::start(vec![Reply::Status(500)]);
    let e = download::download(cifar10(), &root, &opts(&server, &md5_hex(&archive))).unwrap_err();
    assert!(matches!(e, DownloadError::Exists { .. }) && e.to_string().contains(MARKER), "{e}");
    assert!(server.requests().is_empty());
    let e = download::download(
        cifar10(),
        &root,
        &DownloadOptions {
            md5: Some("xyz".into()),
            ..opts(&server, "")
        },
    )
    .unwrap_err();
    assert!(matches!(e, DownloadError::BadMd5(_)), "{e}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}
