//! A Hub-compatible server on 127.0.0.1 implementing the contract of ../shared/hub/PROTOCOL.md.
//!
//! [`FakeHub::start`] binds `127.0.0.1:0` and serves, with `std` only (a thread per connection,
//! one request per connection, `Connection: close`), the calls hf-hub 1.0.0 makes:
//!
//! | route | notes |
//! |---|---|
//! | `POST /api/repos/create`, `DELETE /api/repos/delete` | 409 if the repo exists; a new repo gets an initial commit with `.gitattributes` on `main`, as on the Hub |
//! | `POST /api/{P}/{id}/preupload/{rev}` | `lfs` for paths the branch's `.gitattributes` tracks (`*.safetensors`, …), for binary samples and for files > 10 MiB; else `regular` |
//! | `POST /{prefix}{id}.git/info/lfs/objects/batch` | answers `{"transfer": "xet"}` or `"basic"` ([`LfsTransfer`]); basic carries an upload action to `PUT /__lfs/{oid}` |
//! | `GET /api/{P}/{id}/xet-write-token/{rev}`, `…/xet-read-token/{rev}` | `casUrl = local://<cas_dir>`: hf-xet's own local CAS, no CAS server |
//! | `POST /api/{P}/{id}/commit/{rev}[?create_pr=1]` | NDJSON, validated as a whole before anything is applied (400 for a bad line or an `lfsFile` whose object is in neither the xet CAS nor the basic LFS store, 404 `RevisionNotFound` for a missing branch, 412 on a `parentCommit` mismatch) |
//! | `HEAD`/`GET /{prefix}{id}/resolve/{rev}/{path}` | `X-Repo-Commit`, `ETag` (git blob sha1, or sha256 for LFS/xet files, also as `X-Linked-Etag`), `X-Linked-Size`, `X-Xet-Hash` for xet files, `If-None-Match` → 304, single `Range` → 206/416 |
//! | `GET /api/{P}/{id}[/revision/{rev}]` | `sha`, `siblings`, `cardData` parsed from the README front matter |
//! | `GET /api/{P}/{id}/tree/{rev}[/{path}]` | `recursive`, `expand`, `Link: <…>; rel="next"` pagination ([`FakeHubOptions::tree_page_size`]) |
//! | `POST …/paths-info/{rev}`, `POST …/tag/{rev}`, `DELETE …/tag/{tag}`, `POST`/`DELETE …/branch/{b}`, `GET …/refs`, `GET …/commits/{rev}`, `GET /api/whoami-v2` | |
//!
//! Errors are JSON `{"error": "..."}` with `X-Error-Message` and, where the Hub sends one,
//! `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`).
//!
//! **Xet mode.** hf-xet writes a `local://DIR` CAS with xet-client's `LocalClient` rooted at
//! `DIR/xet/xorbs`: xorbs as `xorbs/default.<xorb hash>`, shards as `shards/<shard hash>.mdb`.
//! Every file entry of a shard carries the file's xet hash, its segments (xorb hash + chunk
//! range) and, because hf-hub uploads with `Sha256Policy::Compute`, a metadata extension holding
//! the file's sha256. The server indexes the shards (parsed with `xet-core-structures`'
//! `MDBMinimalShard`) by that sha256, which is what an `lfsFile` line carries, answers
//! `X-Xet-Hash` from it, and rebuilds the bytes (for plain `GET`s and [`FakeHub::file`]) from the
//! xorbs with `XorbObject::get_bytes_by_chunk_range`. A shard file entry without the extension
//! is indexed by the sha256 of its rebuilt bytes.
//!
//! **Use.** `let hub = FakeHub::start(FakeHubOptions::default());` then an hf-hub client with
//! `.endpoint(&hub.endpoint).token(FakeHub::TOKEN).cache_dir(tmp)` and fast retries
//! (`.retry_max_attempts(2).retry_base_delay(Duration::from_millis(1))`: the default is 5
//! retries from 100 ms, on 408/429/5xx, for every call including commits). Always pass a
//! token: without one hf-hub reads `HF_TOKEN` or the user's token file. See `tests` below.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Cursor, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use xet_core_structures::metadata_shard::file_structs::MDBFileInfo;
use xet_core_structures::metadata_shard::streaming_shard::MDBMinimalShard;
use xet_core_structures::xorb_object::XorbObject;

/// How the fake answers the LFS batch negotiation (`POST {id}.git/info/lfs/objects/batch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LfsTransfer {
    /// `{"transfer": "xet"}`: hf-hub uploads LFS-class files through hf-xet into
    /// `local://<cas_dir>` and commits them as `lfsFile` lines (the production path).
    #[default]
    Xet,
    /// `{"transfer": "basic"}`: hf-hub 1.0.0 has no basic-transfer code, so it commits such files
    /// inline as base64 `file` lines (accepted unless [`FakeHubOptions::reject_inline_binaries`]).
    Basic,
}

/// Settings for [`FakeHub::start`].
#[derive(Debug, Clone)]
pub struct FakeHubOptions {
    /// Accepted bearer tokens. Any other token is a 401 on every route; no token is a 401 on
    /// writes and on private repos.
    pub tokens: Vec<String>,
    /// The transfer the LFS batch endpoint chooses.
    pub lfs_transfer: LfsTransfer,
    /// The user the tokens belong to: `whoami-v2`'s name, and the namespace of repos created
    /// without an `organization`.
    pub user: String,
    /// Entries per page of a tree listing; further pages are linked with `Link: rel="next"`.
    pub tree_page_size: usize,
    /// Reject inline `file` lines that the Hub would refuse outside LFS/xet (LFS-tracked paths,
    /// binary content, > 10 MiB) with the Hub's 400, as huggingface.co does.
    pub reject_inline_binaries: bool,
}

impl Default for FakeHubOptions {
    /// One token, [`FakeHub::TOKEN`]; xet transfer; user `tester`; 1000 tree entries per page.
    fn default() -> Self {
        FakeHubOptions {
            tokens: vec![FakeHub::TOKEN.to_string()],
            lfs_transfer: LfsTransfer::Xet,
            user: "tester".to_string(),
            tree_page_size: 1000,
            reject_inline_binaries: false,
        }
    }
}

/// One request as the server received it, with the status it answered.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `GET`, `HEAD`, `POST`, …
    pub method: String,
    /// The request target as sent: percent-encoded path plus `?query`.
    pub path: String,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body after de-chunking.
    pub body: Vec<u8>,
    /// The status code the server answered.
    pub status: u16,
}

impl Recorded {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body as (lossy) UTF-8.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One commit of a repo, as [`FakeHub::commits`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRecord {
    /// 40 lower-case hex characters.
    pub id: String,
    /// The ref it was committed to: a branch name or `refs/pr/N`.
    pub revision: String,
    /// The previous head of that ref (`None` for the initial commit).
    pub parent: Option<String>,
    /// The header's `summary`.
    pub summary: String,
    /// The header's `description`.
    pub description: String,
    /// Paths added or replaced, in commit order.
    pub added: Vec<String>,
    /// The subset of `added` that came as `lfsFile` lines (stored in the xet CAS or LFS store).
    pub lfs_files: Vec<String>,
    /// Paths removed (`deletedFile`, and every file under a `deletedFolder`).
    pub deleted: Vec<String>,
    /// Every path of the tree after the commit, sorted.
    pub files: Vec<String>,
}

/// A Hub on loopback. Dropping it stops the listener (running connections finish) and removes
/// `cas_dir`.
pub struct FakeHub {
    /// `http://127.0.0.1:PORT`, to pass to `HFClientBuilder::endpoint`.
    pub endpoint: String,
    /// The folder handed out as `casUrl = local://<cas_dir>`.
    pub cas_dir: PathBuf,
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    _tmp: tempfile::TempDir,
}

impl FakeHub {
    /// The token [`FakeHubOptions::default`] accepts.
    pub const TOKEN: &'static str = "hf_fakehub_write_token";

    /// Binds `127.0.0.1:0` and starts serving on a background thread.
    pub fn start(opts: FakeHubOptions) -> FakeHub {
        let tmp = tempfile::Builder::new()
            .prefix("fakehub-cas")
            .tempdir()
            .expect("temp dir for the CAS");
        let cas_dir = tmp.path().to_path_buf();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let endpoint = format!("http://{addr}");
        let shared = Arc::new(Shared {
            opts,
            endpoint: endpoint.clone(),
            cas_dir: cas_dir.clone(),
            state: Mutex::new(State::default()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let shared = Arc::clone(&shared);
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("fakehub-accept".into())
                .spawn(move || {
                    for conn in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(stream) = conn else { continue };
                        let shared = Arc::clone(&shared);
                        let _ = std::thread::Builder::new()
                            .name("fakehub-conn".into())
                            .spawn(move || serve_connection(&shared, stream));
                    }
                })
                .expect("spawn accept thread")
        };
        FakeHub {
            endpoint,
            cas_dir,
            shared,
            addr,
            stop,
            accept: Some(accept),
            _tmp: tmp,
        }
    }

    /// The next `n` requests whose `"METHOD target"` contains `route` (e.g. `"/commit/"`,
    /// `"HEAD /"`, `"/preupload/"`) are answered `status` with a JSON error, before auth and
    /// routing. Rules are consumed in the order they were added.
    pub fn fail_next(&self, route: &str, status: u16, n: usize) {
        if n > 0 {
            self.shared.lock().failures.push(Failure {
                route: route.to_string(),
                status,
                remaining: n,
            });
        }
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// Forgets the recorded requests (to assert on what a later step sends).
    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// The committed bytes of `path` at `rev` (branch, tag, `refs/pr/N` or commit id) of `repo`
    /// (`ns/name` for a model, `datasets/ns/name`, `spaces/ns/name`); xet-stored files are rebuilt
    /// from the CAS. `None` if the repo, revision or path does not exist.
    pub fn file(&self, repo: &str, rev: &str, path: &str) -> Option<Vec<u8>> {
        let blob = self.blob(repo, rev, path)?;
        self.shared.blob_bytes(&blob).ok()
    }

    /// The xet hash of `path` at `rev` if it is stored in the xet CAS (what `X-Xet-Hash` says).
    pub fn xet_hash(&self, repo: &str, rev: &str, path: &str) -> Option<String> {
        match self.blob(repo, rev, path)?.content {
            Content::Xet(file) => Some(file.hash),
            _ => None,
        }
    }

    /// The commits of `repo` in the order they were made, the initial one first.
    pub fn commits(&self, repo: &str) -> Vec<CommitRecord> {
        let st = self.shared.lock();
        st.repos
            .get(&repo_key(repo))
            .map(|r| r.order.iter().map(|id| r.commits[id].rec.clone()).collect())
            .unwrap_or_default()
    }

    /// Branch name → head commit id.
    pub fn branches(&self, repo: &str) -> BTreeMap<String, String> {
        let st = self.shared.lock();
        st.repos.get(&repo_key(repo)).map(|r| r.branches.clone()).unwrap_or_default()
    }

    /// Tag name → commit id.
    pub fn tags(&self, repo: &str) -> BTreeMap<String, String> {
        let st = self.shared.lock();
        st.repos.get(&repo_key(repo)).map(|r| r.tags.clone()).unwrap_or_default()
    }

    /// The repos that exist, as `models/ns/name`, `datasets/ns/name`, `spaces/ns/name`.
    pub fn repos(&self) -> Vec<String> {
        self.shared.lock().repos.keys().cloned().collect()
    }

    /// Commits `files` (stored inline, like `file` lines) to `branch` of `repo` without going
    /// through HTTP, creating the public repo (with its initial commit) and the branch (from
    /// `main`) if needed. Returns the commit id. For seeding repos that a test only reads.
    pub fn seed_commit(&self, repo: &str, branch: &str, files: &[(&str, &[u8])], summary: &str) -> String {
        let key = repo_key(repo);
        let mut st = self.shared.lock();
        if !st.repos.contains_key(&key) {
            let (kind, id) = key.split_once('/').expect("repo key");
            let repo = st.new_repo(kind, id, false);
            st.repos.insert(key.clone(), repo);
        }
        let r = st.repos.get_mut(&key).expect("repo");
        if !r.branches.contains_key(branch) {
            let main = r.branches["main"].clone();
            r.branches.insert(branch.to_string(), main);
        }
        let ops = files
            .iter()
            .map(|(path, bytes)| Op::Put(path.to_string(), Blob::inline(bytes.to_vec()), false))
            .collect();
        let target = Target::Branch(branch.to_string());
        let rec = st.apply_commit(&key, target, summary, "", ops);
        rec.id
    }

    fn blob(&self, repo: &str, rev: &str, path: &str) -> Option<Blob> {
        let st = self.shared.lock();
        let r = st.repos.get(&repo_key(repo))?;
        let cid = r.resolve(rev)?;
        r.commits[&cid].tree.get(path).cloned()
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept() so the thread sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// State

struct Shared {
    opts: FakeHubOptions,
    endpoint: String,
    cas_dir: PathBuf,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking connection thread must not wedge the hub for the test that owns it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn blob_bytes(&self, blob: &Blob) -> io::Result<Vec<u8>> {
        match &blob.content {
            Content::Inline(bytes) => Ok(bytes.to_vec()),
            Content::Xet(file) => reconstruct(&self.cas_dir, file),
            Content::Lfs => self
                .lock()
                .lfs_store
                .get(&blob.sha256)
                .map(|b| b.to_vec())
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "LFS object missing")),
        }
    }
}

#[derive(Default)]
struct State {
    repos: BTreeMap<String, Repo>,
    failures: Vec<Failure>,
    requests: Vec<Recorded>,
    /// Objects uploaded with the basic transfer (`PUT /__lfs/{oid}`), by sha256.
    lfs_store: HashMap<String, Arc<Vec<u8>>>,
    xet: XetIndex,
    counter: u64,
}

struct Failure {
    route: String,
    status: u16,
    remaining: usize,
}

struct Repo {
    /// `models`, `datasets` or `spaces`.
    kind: String,
    /// `ns/name`.
    id: String,
    private: bool,
    created: u64,
    branches: BTreeMap<String, String>,
    tags: BTreeMap<String, String>,
    prs: BTreeMap<u64, String>,
    commits: HashMap<String, Commit>,
    order: Vec<String>,
}

struct Commit {
    rec: CommitRecord,
    time: u64,
    tree: BTreeMap<String, Blob>,
}

#[derive(Clone)]
struct Blob {
    size: u64,
    sha256: String,
    /// Git blob sha1 (of the content, or of the LFS pointer for LFS files).
    git_oid: String,
    content: Content,
    /// The commit that last wrote this path (tree `expand=true`'s `lastCommit`).
    last_commit: String,
}

#[derive(Clone)]
enum Content {
    Inline(Arc<Vec<u8>>),
    Xet(XetFile),
    /// In `State::lfs_store` under the blob's sha256.
    Lfs,
}

impl Blob {
    fn inline(bytes: Vec<u8>) -> Blob {
        Blob {
            size: bytes.len() as u64,
            sha256: sha256_hex(&bytes),
            git_oid: git_blob_oid(&bytes),
            content: Content::Inline(Arc::new(bytes)),
            last_commit: String::new(),
        }
    }

    fn lfs(sha256: &str, size: u64, content: Content) -> Blob {
        Blob {
            size,
            sha256: sha256.to_string(),
            git_oid: git_blob_oid(lfs_pointer(sha256, size).as_bytes()),
            content,
            last_commit: String::new(),
        }
    }

    fn is_lfs(&self) -> bool {
        !matches!(self.content, Content::Inline(_))
    }

    fn etag(&self) -> &str {
        if self.is_lfs() {
            &self.sha256
        } else {
            &self.git_oid
        }
    }
}

enum Op {
    /// Path, blob, whether it came as an `lfsFile` line.
    Put(String, Blob, bool),
    Delete(String),
    DeleteFolder(String),
}

enum Target {
    Branch(String),
    /// A new `refs/pr/N` on top of this branch.
    NewPr(String),
}

impl Repo {
    fn resolve(&self, rev: &str) -> Option<String> {
        let rev = rev.strip_prefix("refs/heads/").unwrap_or(rev);
        if let Some(c) = self.branches.get(rev) {
            return Some(c.clone());
        }
        if let Some(c) = self.tags.get(rev.strip_prefix("refs/tags/").unwrap_or(rev)) {
            return Some(c.clone());
        }
        if let Some(n) = rev.strip_prefix("refs/pr/").and_then(|n| n.parse::<u64>().ok()) {
            return self.prs.get(&n).cloned();
        }
        self.commits.contains_key(rev).then(|| rev.to_string())
    }

    fn prefix(&self) -> &'static str {
        url_prefix(&self.kind)
    }
}

impl State {
    fn next_counter(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    /// A repo with the Hub's initial commit (`.gitattributes`) on `main`.
    fn new_repo(&mut self, kind: &str, id: &str, private: bool) -> Repo {
        let now = now_secs();
        let n = self.next_counter();
        let cid = sha1_hex(format!("{kind}/{id}\ninitial commit\n{n}").as_bytes());
        let mut blob = Blob::inline(default_gitattributes().into_bytes());
        blob.last_commit = cid.clone();
        let tree = BTreeMap::from([(".gitattributes".to_string(), blob)]);
        let rec = CommitRecord {
            id: cid.clone(),
            revision: "main".into(),
            parent: None,
            summary: "initial commit".into(),
            description: String::new(),
            added: vec![".gitattributes".into()],
            lfs_files: vec![],
            deleted: vec![],
            files: vec![".gitattributes".into()],
        };
        Repo {
            kind: kind.to_string(),
            id: id.to_string(),
            private,
            created: now,
            branches: BTreeMap::from([("main".to_string(), cid.clone())]),
            tags: BTreeMap::new(),
            prs: BTreeMap::new(),
            commits: HashMap::from([(cid.clone(), Commit { rec, time: now, tree })]),
            order: vec![cid],
        }
    }

    /// Applies validated operations as one commit. The caller has checked that the target
    /// branch exists and that every operation is valid.
    fn apply_commit(&mut self, key: &str, target: Target, summary: &str, description: &str, ops: Vec<Op>) -> CommitRecord {
        let n = self.next_counter();
        let repo = self.repos.get_mut(key).expect("repo exists");
        let base = match &target {
            Target::Branch(b) | Target::NewPr(b) => repo.branches[b].clone(),
        };
        let mut tree = repo.commits[&base].tree.clone();
        let id = sha1_hex(format!("{key}\n{base}\n{summary}\n{n}\n{:?}", SystemTime::now()).as_bytes());
        let (mut added, mut lfs_files, mut deleted) = (vec![], vec![], vec![]);
        for op in ops {
            match op {
                Op::Put(path, mut blob, is_lfs_line) => {
                    blob.last_commit = id.clone();
                    if is_lfs_line {
                        lfs_files.push(path.clone());
                    }
                    added.push(path.clone());
                    tree.insert(path, blob);
                }
                Op::Delete(path) => {
                    if tree.remove(&path).is_some() {
                        deleted.push(path);
                    }
                }
                Op::DeleteFolder(dir) => {
                    let prefix = format!("{}/", dir.trim_end_matches('/'));
                    let gone: Vec<String> = tree.keys().filter(|p| p.starts_with(&prefix)).cloned().collect();
                    for p in gone {
                        tree.remove(&p);
                        deleted.push(p);
                    }
                }
            }
        }
        let revision = match &target {
            Target::Branch(b) => {
                repo.branches.insert(b.clone(), id.clone());
                b.clone()
            }
            Target::NewPr(_) => {
                let num = repo.prs.keys().next_back().map_or(1, |n| n + 1);
                repo.prs.insert(num, id.clone());
                format!("refs/pr/{num}")
            }
        };
        let rec = CommitRecord {
            id: id.clone(),
            revision,
            parent: Some(base),
            summary: summary.to_string(),
            description: description.to_string(),
            added,
            lfs_files,
            deleted,
            files: tree.keys().cloned().collect(),
        };
        repo.commits.insert(
            id.clone(),
            Commit {
                rec: rec.clone(),
                time: now_secs(),
                tree,
            },
        );
        repo.order.push(id);
        rec
    }

    fn take_failure(&mut self, route: &str) -> Option<u16> {
        let i = self.failures.iter().position(|f| route.contains(&f.route))?;
        let status = self.failures[i].status;
        self.failures[i].remaining -= 1;
        if self.failures[i].remaining == 0 {
            self.failures.remove(i);
        }
        Some(status)
    }
}

/// `ns/name` → `models/ns/name`; `datasets/ns/name` and `spaces/ns/name` stay.
fn repo_key(repo: &str) -> String {
    let parts: Vec<&str> = repo.split('/').collect();
    if parts.len() == 3 && matches!(parts[0], "models" | "datasets" | "spaces") {
        repo.to_string()
    } else {
        format!("models/{repo}")
    }
}

fn url_prefix(kind: &str) -> &'static str {
    match kind {
        "datasets" => "datasets/",
        "spaces" => "spaces/",
        _ => "",
    }
}

// ---------------------------------------------------------------------------------------------
// The xet CAS (`local://<cas_dir>`), read with xet-core-structures

#[derive(Clone)]
struct XetFile {
    /// The file's xet (merkle) hash, hex as hf-xet prints it.
    hash: String,
    size: u64,
    /// Xorb hash, chunk range [start, end).
    segments: Vec<(String, u32, u32)>,
}

#[derive(Default)]
struct XetIndex {
    scanned: HashSet<PathBuf>,
    by_sha256: HashMap<String, XetFile>,
}

/// Where xet-client's `LocalClient` keeps a `local://DIR` CAS (xet-data `create_remote_client`).
fn local_cas_root(cas_dir: &Path) -> PathBuf {
    cas_dir.join("xet").join("xorbs")
}

impl XetIndex {
    /// Indexes the shards written since the last call.
    fn refresh(&mut self, cas_dir: &Path) {
        let Ok(entries) = std::fs::read_dir(local_cas_root(cas_dir).join("shards")) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "mdb") || self.scanned.contains(&path) {
                continue;
            }
            if let Ok(files) = read_shard(cas_dir, &path) {
                self.by_sha256.extend(files);
                self.scanned.insert(path);
            }
        }
    }

    fn lookup(&mut self, cas_dir: &Path, sha256: &str) -> Option<XetFile> {
        if !self.by_sha256.contains_key(sha256) {
            self.refresh(cas_dir);
        }
        self.by_sha256.get(sha256).cloned()
    }
}

fn read_shard(cas_dir: &Path, path: &Path) -> io::Result<Vec<(String, XetFile)>> {
    let bytes = std::fs::read(path)?;
    let shard = MDBMinimalShard::from_reader(&mut Cursor::new(&bytes), true, false).map_err(io::Error::other)?;
    let mut out = Vec::new();
    for i in 0..shard.num_files() {
        let Some(view) = shard.file(i) else { continue };
        let info = MDBFileInfo::from(view);
        let file = XetFile {
            hash: view.file_hash().hex(),
            size: info.file_size(),
            segments: info
                .segments
                .iter()
                .map(|s| (s.xorb_hash.hex(), s.chunk_index_start, s.chunk_index_end))
                .collect(),
        };
        let sha256 = match view.metadata_ext() {
            Some(ext) => ext.sha256.hex(),
            None => match reconstruct(cas_dir, &file) {
                Ok(bytes) => sha256_hex(&bytes),
                Err(_) => continue,
            },
        };
        out.push((sha256, file));
    }
    Ok(out)
}

fn xorb_path(cas_dir: &Path, xorb: &str) -> PathBuf {
    local_cas_root(cas_dir).join("xorbs").join(format!("default.{xorb}"))
}

/// Rebuilds a file from its segments.
fn reconstruct(cas_dir: &Path, file: &XetFile) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(file.size as usize);
    for (xorb, start, end) in &file.segments {
        let mut reader = BufReader::new(File::open(xorb_path(cas_dir, xorb))?);
        let obj = XorbObject::deserialize(&mut reader).map_err(io::Error::other)?;
        out.extend(obj.get_bytes_by_chunk_range(&mut reader, *start, *end).map_err(io::Error::other)?);
    }
    if out.len() as u64 != file.size {
        return Err(io::Error::other(format!("rebuilt {} bytes, expected {}", out.len(), file.size)));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1

struct Request {
    method: String,
    /// As sent: percent-encoded path and query.
    target: String,
    /// Path segments, percent-decoded one by one (`refs%2Fpr%2F1` stays one segment).
    segments: Vec<String>,
    /// The raw path (before `?`).
    raw_path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    fn query(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn query_flag(&self, name: &str) -> bool {
        self.query(name).is_some_and(|v| matches!(v, "1" | "true" | "True"))
    }

    fn json(&self) -> Result<Value, Response> {
        if self.body.is_empty() {
            return Ok(json!({}));
        }
        serde_json::from_slice(&self.body).map_err(|e| Response::error(400, None, &format!("Invalid JSON body: {e}")))
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn new(status: u16) -> Response {
        Response {
            status,
            headers: vec![],
            body: vec![],
        }
    }

    fn json(status: u16, value: &Value) -> Response {
        Response::new(status)
            .header("Content-Type", "application/json; charset=utf-8")
            .body(serde_json::to_vec(value).expect("serialize JSON"))
    }

    fn error(status: u16, code: Option<&str>, message: &str) -> Response {
        let mut r = Response::json(status, &json!({ "error": message })).header("X-Error-Message", &message.replace(['\r', '\n'], " "));
        if let Some(code) = code {
            r = r.header("X-Error-Code", code);
        }
        r
    }

    fn header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    fn body(mut self, body: Vec<u8>) -> Response {
        self.body = body;
        self
    }
}

fn bad_data(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Reads one request: request line, headers, then a `Content-Length` or chunked body.
fn read_request(stream: &mut TcpStream) -> io::Result<Option<Request>> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(bad_data("bad request line"));
    };
    let (method, target) = (method.to_string(), target.to_string());
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').ok_or_else(|| bad_data("bad header line"))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        if headers.len() > 256 {
            return Err(bad_data("too many headers"));
        }
    }
    if find_header(&headers, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let chunked = find_header(&headers, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        read_chunked(&mut reader)?
    } else if let Some(len) = find_header(&headers, "content-length") {
        let len: usize = len.parse().map_err(|_| bad_data("bad Content-Length"))?;
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        body
    } else {
        Vec::new()
    };
    let (raw_path, raw_query) = target.split_once('?').unwrap_or((&target, ""));
    let segments = raw_path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s, false))
        .collect();
    let query = raw_query
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect();
    Ok(Some(Request {
        raw_path: raw_path.to_string(),
        method,
        segments,
        query,
        headers,
        body,
        target,
    }))
}

fn read_chunked(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let size = line.trim().split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| bad_data("bad chunk size"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        line.clear();
        reader.read_line(&mut line)?;
    }
}

fn write_response(stream: &mut TcpStream, head_only: bool, resp: &Response) -> io::Result<()> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status)).into_bytes();
    for (k, v) in &resp.headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    let has_length = find_header(&resp.headers, "content-length").is_some();
    if !has_length && resp.status != 304 {
        out.extend_from_slice(format!("Content-Length: {}\r\n", resp.body.len()).as_bytes());
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    if !head_only && resp.status != 304 {
        out.extend_from_slice(&resp.body);
    }
    stream.write_all(&out)?;
    stream.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        206 => "Partial Content",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        412 => "Precondition Failed",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn serve_connection(shared: &Shared, mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = stream.set_nodelay(true);
    let resp_and_method = match read_request(&mut stream) {
        Ok(Some(req)) => {
            let resp = shared.dispatch(&req);
            Some((resp, req.method == "HEAD"))
        }
        Ok(None) => None,
        Err(e) => Some((Response::error(400, None, &format!("malformed request: {e}")), false)),
    };
    if let Some((resp, head_only)) = resp_and_method {
        let _ = write_response(&mut stream, head_only, &resp);
    }
    let _ = stream.shutdown(Shutdown::Write);
}

// ---------------------------------------------------------------------------------------------
// Routing

/// Who the request authenticates as.
enum Auth {
    Anonymous,
    User,
}

impl Shared {
    fn dispatch(&self, req: &Request) -> Response {
        let (idx, injected) = {
            let mut st = self.lock();
            st.requests.push(Recorded {
                method: req.method.clone(),
                path: req.target.clone(),
                headers: req.headers.clone(),
                body: req.body.clone(),
                status: 0,
            });
            let idx = st.requests.len() - 1;
            (idx, st.take_failure(&format!("{} {}", req.method, req.target)))
        };
        let resp = match injected {
            Some(status) => Response::error(status, None, &format!("injected failure {status} (FakeHub::fail_next)")),
            None => self.route(req).unwrap_or_else(|e| e),
        };
        if let Some(r) = self.lock().requests.get_mut(idx) {
            r.status = resp.status;
        }
        resp
    }

    fn auth(&self, req: &Request) -> Result<Auth, Response> {
        let Some(value) = req.header("authorization") else {
            return Ok(Auth::Anonymous);
        };
        let token = value.strip_prefix("Bearer ").unwrap_or(value).trim();
        if self.opts.tokens.iter().any(|t| t == token) {
            Ok(Auth::User)
        } else {
            Err(Response::error(401, None, "Invalid credentials in Authorization header"))
        }
    }

    fn require_write(&self, req: &Request) -> Result<(), Response> {
        match self.auth(req)? {
            Auth::User => Ok(()),
            Auth::Anonymous => Err(Response::error(
                401,
                None,
                "You must be authenticated to access this resource (no Authorization header)",
            )),
        }
    }

    fn route(&self, req: &Request) -> Result<Response, Response> {
        let seg: Vec<&str> = req.segments.iter().map(String::as_str).collect();
        let m = req.method.as_str();
        match (m, seg.as_slice()) {
            ("GET", ["api", "whoami-v2"]) => {
                self.require_write(req)?;
                let user = &self.opts.user;
                Ok(Response::json(
                    200,
                    &json!({
                        "type": "user",
                        "name": user,
                        "fullname": user,
                        "orgs": [],
                        "auth": {"type": "access_token", "accessToken": {"displayName": "fakehub", "role": "write"}},
                    }),
                ))
            }
            ("POST", ["api", "repos", "create"]) => self.create_repo(req),
            ("DELETE", ["api", "repos", "delete"]) => self.delete_repo(req),
            (_, ["api", kind @ ("models" | "datasets" | "spaces"), ns, name, rest @ ..]) => {
                self.repo_api(req, kind, &format!("{ns}/{name}"), rest)
            }
            ("PUT", ["__lfs", oid]) => self.lfs_put(req, oid),
            ("POST", [prefix @ .., ns, name_git, "info", "lfs", "objects", "batch"]) if name_git.ends_with(".git") => {
                let kind = kind_from_prefix(prefix).ok_or_else(not_found)?;
                self.lfs_batch(req, kind, &format!("{ns}/{}", name_git.trim_end_matches(".git")))
            }
            ("GET" | "HEAD", _) => {
                let i = seg.iter().position(|s| *s == "resolve").ok_or_else(not_found)?;
                if i < 2 || seg.len() < i + 3 {
                    return Err(not_found());
                }
                let kind = kind_from_prefix(&seg[..i - 2]).ok_or_else(not_found)?;
                let id = format!("{}/{}", seg[i - 2], seg[i - 1]);
                self.resolve_file(req, kind, &id, seg[i + 1], &seg[i + 2..].join("/"))
            }
            _ => Err(not_found()),
        }
    }

    fn repo_api(&self, req: &Request, kind: &str, id: &str, rest: &[&str]) -> Result<Response, Response> {
        match (req.method.as_str(), rest) {
            ("GET", []) => self.repo_info(req, kind, id, "main"),
            ("GET", ["revision", rev]) => self.repo_info(req, kind, id, rev),
            ("POST", ["preupload", rev]) => self.preupload(req, kind, id, rev),
            ("POST", ["commit", rev]) => self.commit(req, kind, id, rev),
            ("GET", [token @ ("xet-write-token" | "xet-read-token"), rev]) => {
                self.xet_token(req, kind, id, rev, *token == "xet-write-token")
            }
            ("GET", ["tree", rev, path @ ..]) => self.tree(req, kind, id, rev, &path.join("/")),
            ("POST", ["paths-info", rev]) => self.paths_info(req, kind, id, rev),
            ("POST", ["tag", rev]) => self.create_tag(req, kind, id, rev),
            ("DELETE", ["tag", tag]) => self.delete_ref(req, kind, id, tag, false),
            ("POST", ["branch", branch]) => self.create_branch(req, kind, id, branch),
            ("DELETE", ["branch", branch]) => self.delete_ref(req, kind, id, branch, true),
            ("GET", ["refs"]) => self.refs(req, kind, id),
            ("GET", ["commits", rev]) => self.list_commits(req, kind, id, rev),
            _ => Err(not_found()),
        }
    }

    /// Locks the state and checks that the repo exists and may be read (or written).
    fn open_repo(&self, req: &Request, kind: &str, id: &str, write: bool) -> Result<(MutexGuard<'_, State>, String), Response> {
        let auth = self.auth(req)?;
        if write {
            self.require_write(req)?;
        }
        let key = format!("{kind}/{id}");
        let st = self.lock();
        let Some(repo) = st.repos.get(&key) else {
            return Err(repo_not_found());
        };
        if repo.private && matches!(auth, Auth::Anonymous) {
            return Err(Response::error(401, Some("RepoNotFound"), "Repository not found"));
        }
        Ok((st, key))
    }

    fn create_repo(&self, req: &Request) -> Result<Response, Response> {
        self.require_write(req)?;
        let body = req.json()?;
        let name = body["name"].as_str().unwrap_or_default();
        let valid_name = |s: &str| {
            !s.is_empty()
                && s.len() <= 96
                && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && !s.starts_with(['-', '.'])
                && !s.contains("..")
        };
        let org = body["organization"].as_str().unwrap_or(&self.opts.user);
        if !valid_name(name) || !valid_name(org) {
            return Err(Response::error(400, None, &format!("Invalid repo name: {org}/{name}")));
        }
        let kind = match body["type"].as_str().unwrap_or("model") {
            "model" => "models",
            "dataset" => "datasets",
            "space" => "spaces",
            other => return Err(Response::error(400, None, &format!("Invalid repo type: {other}"))),
        };
        let id = format!("{org}/{name}");
        let key = format!("{kind}/{id}");
        let url = format!("{}/{}{id}", self.endpoint, url_prefix(kind));
        let mut st = self.lock();
        if st.repos.contains_key(&key) {
            let what = kind.trim_end_matches('s');
            return Err(Response::json(
                409,
                &json!({"error": format!("You already created this {what} repo"), "url": url}),
            ));
        }
        let repo = st.new_repo(kind, &id, body["private"].as_bool().unwrap_or(false));
        st.repos.insert(key, repo);
        Ok(Response::json(200, &json!({ "url": url, "name": id, "id": id })))
    }

    fn delete_repo(&self, req: &Request) -> Result<Response, Response> {
        self.require_write(req)?;
        let body = req.json()?;
        let name = body["name"].as_str().unwrap_or_default();
        let org = body["organization"].as_str().unwrap_or(&self.opts.user);
        let kind = match body["type"].as_str().unwrap_or("model") {
            "dataset" => "datasets",
            "space" => "spaces",
            _ => "models",
        };
        let mut st = self.lock();
        match st.repos.remove(&format!("{kind}/{org}/{name}")) {
            Some(_) => Ok(Response::json(200, &json!({}))),
            None => Err(repo_not_found()),
        }
    }

    fn repo_info(&self, req: &Request, kind: &str, id: &str, rev: &str) -> Result<Response, Response> {
        let (st, key) = self.open_repo(req, kind, id, false)?;
        let repo = &st.repos[&key];
        let cid = repo.resolve(rev).ok_or_else(|| revision_not_found(rev))?;
        let commit = &repo.commits[&cid];
        let blobs = req.query_flag("blobs");
        let siblings: Vec<Value> = commit
            .tree
            .iter()
            .map(|(path, b)| {
                let mut s = json!({ "rfilename": path });
                if blobs {
                    s["size"] = json!(b.size);
                    s["blobId"] = json!(b.git_oid);
                    if b.is_lfs() {
                        s["lfs"] = json!({"sha256": b.sha256, "size": b.size, "pointerSize": lfs_pointer(&b.sha256, b.size).len()});
                    }
                }
                s
            })
            .collect();
        let mut info = json!({
            "_id": &sha1_hex(key.as_bytes())[..24],
            "id": id,
            "author": id.split('/').next().unwrap_or_default(),
            "sha": cid,
            "lastModified": iso8601(commit.time),
            "createdAt": iso8601(repo.created),
            "private": repo.private,
            "disabled": false,
            "gated": false,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": commit.tree.values().map(|b| b.size).sum::<u64>(),
        });
        if kind == "models" {
            info["modelId"] = json!(id);
        }
        if let Some(Content::Inline(readme)) = commit.tree.get("README.md").map(|b| &b.content) {
            if let Ok(Some(card)) = front_matter(readme) {
                for field in ["library_name", "pipeline_tag"] {
                    if let Some(v) = card.get(field) {
                        info[field] = v.clone();
                    }
                }
                if let Some(tags) = card.get("tags").filter(|t| t.is_array()) {
                    info["tags"] = tags.clone();
                }
                info["cardData"] = card;
            }
        }
        Ok(Response::json(200, &info))
    }

    fn preupload(&self, req: &Request, kind: &str, id: &str, rev: &str) -> Result<Response, Response> {
        let body = req.json()?;
        let (st, key) = self.open_repo(req, kind, id, true)?;
        let repo = &st.repos[&key];
        let cid = repo.resolve(rev).ok_or_else(|| revision_not_found(rev))?;
        let tree = &repo.commits[&cid].tree;
        let patterns = lfs_patterns(tree);
        let files = body["files"]
            .as_array()
            .ok_or_else(|| Response::error(400, None, "`files` must be an array"))?;
        let mut out = Vec::with_capacity(files.len());
        for f in files {
            let path = f["path"]
                .as_str()
                .ok_or_else(|| Response::error(400, None, "file without `path`"))?;
            let size = f["size"].as_u64().unwrap_or(0);
            let sample = base64::engine::general_purpose::STANDARD
                .decode(f["sample"].as_str().unwrap_or_default())
                .map_err(|_| Response::error(400, None, &format!("invalid base64 sample for {path}")))?;
            let mode = if needs_lfs(&patterns, path, size, &sample) {
                "lfs"
            } else {
                "regular"
            };
            let mut entry = json!({ "path": path, "uploadMode": mode, "shouldIgnore": false });
            if let Some(existing) = tree.get(path) {
                entry["oid"] = json!(existing.git_oid);
            }
            out.push(entry);
        }
        Ok(Response::json(200, &json!({ "files": out, "commitOid": cid })))
    }

    fn lfs_batch(&self, req: &Request, kind: &str, id: &str) -> Result<Response, Response> {
        let body = req.json()?;
        let upload = body["operation"].as_str() == Some("upload");
        let (st, key) = self.open_repo(req, kind, id, upload)?;
        let offered: Vec<&str> = body["transfers"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_else(|| vec!["basic"]);
        let transfer = match self.opts.lfs_transfer {
            LfsTransfer::Xet if offered.contains(&"xet") => "xet",
            _ => "basic",
        };
        let repo = &st.repos[&key];
        let objects: Vec<Value> = body["objects"]
            .as_array()
            .map(|a| a.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|o| {
                let oid = o["oid"].as_str().unwrap_or_default();
                let mut obj = json!({ "oid": oid, "size": o["size"], "authenticated": true });
                let have = st.lfs_store.contains_key(oid);
                if upload && transfer == "basic" && !have {
                    obj["actions"] = json!({"upload": {"href": format!("{}/__lfs/{oid}", self.endpoint), "header": {}}});
                } else if !upload && have {
                    obj["actions"] =
                        json!({"download": {"href": format!("{}/{}{}/resolve/main/__lfs/{oid}", self.endpoint, repo.prefix(), repo.id)}});
                }
                obj
            })
            .collect();
        let mut resp = Response::json(200, &json!({ "transfer": transfer, "objects": objects, "hash_algo": "sha256" }));
        resp.headers.retain(|(k, _)| k != "Content-Type");
        Ok(resp.header("Content-Type", "application/vnd.git-lfs+json"))
    }

    fn lfs_put(&self, req: &Request, oid: &str) -> Result<Response, Response> {
        self.require_write(req)?;
        if sha256_hex(&req.body) != oid {
            return Err(Response::error(400, None, "uploaded content does not match its oid"));
        }
        self.lock().lfs_store.insert(oid.to_string(), Arc::new(req.body.clone()));
        Ok(Response::json(200, &json!({})))
    }

    fn xet_token(&self, req: &Request, kind: &str, id: &str, rev: &str, write: bool) -> Result<Response, Response> {
        let (st, key) = self.open_repo(req, kind, id, write)?;
        st.repos[&key].resolve(rev).ok_or_else(|| revision_not_found(rev))?;
        let cas_url = format!("local://{}", self.cas_dir.display());
        let exp = now_secs() + 3600;
        Ok(Response::json(
            200,
            &json!({ "accessToken": format!("xet-{}-{}", if write { "write" } else { "read" }, &sha1_hex(key.as_bytes())[..12]), "exp": exp, "casUrl": cas_url }),
        )
        .header("X-Xet-Cas-Url", &cas_url)
        .header("X-Xet-Token-Expiration", &exp.to_string()))
    }

    fn commit(&self, req: &Request, kind: &str, id: &str, rev: &str) -> Result<Response, Response> {
        let (mut guard, key) = self.open_repo(req, kind, id, true)?;
        let st = &mut *guard;
        let repo = &st.repos[&key];
        // Commits go to branches (a PR is opened on top of one).
        let branch = rev.strip_prefix("refs/heads/").unwrap_or(rev).to_string();
        let Some(head) = repo.branches.get(&branch).cloned() else {
            return Err(revision_not_found(rev));
        };
        let head_tree = &repo.commits[&head].tree;
        let patterns = lfs_patterns(head_tree);

        // Validate every line before touching anything.
        let mut header: Option<Value> = None;
        let mut ops = Vec::new();
        for (i, line) in req.body.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let bad = |msg: String| Response::error(400, None, &format!("line {}: {msg}", i + 1));
            let v: Value = serde_json::from_slice(line).map_err(|e| bad(format!("invalid JSON: {e}")))?;
            let value = &v["value"];
            let path_of = |v: &Value| -> Result<String, Response> {
                let p = v["path"].as_str().ok_or_else(|| bad("missing `path`".into()))?;
                if !valid_repo_path(p) {
                    return Err(bad(format!("invalid path {p:?}")));
                }
                Ok(p.to_string())
            };
            match v["key"].as_str() {
                Some("header") => {
                    if header.is_some() {
                        return Err(bad("duplicate header".into()));
                    }
                    header = Some(value.clone());
                }
                Some("file") => {
                    let path = path_of(value)?;
                    let content = value["content"].as_str().ok_or_else(|| bad("missing `content`".into()))?;
                    let bytes = match value["encoding"].as_str().unwrap_or("base64") {
                        "base64" => base64::engine::general_purpose::STANDARD
                            .decode(content)
                            .map_err(|e| bad(format!("invalid base64 for {path}: {e}")))?,
                        "utf-8" | "utf8" => content.as_bytes().to_vec(),
                        other => return Err(bad(format!("unknown encoding {other:?}"))),
                    };
                    if self.opts.reject_inline_binaries && needs_lfs(&patterns, &path, bytes.len() as u64, &bytes) {
                        return Err(Response::error(
                            400,
                            None,
                            &format!(
                                "Your push was rejected because it contains binary files. Please use https://huggingface.co/docs/hub/xet to store binary files. Offending file: {path}"
                            ),
                        ));
                    }
                    if path == "README.md" {
                        if let Err(e) = front_matter(&bytes) {
                            return Err(Response::error(400, None, &format!("Invalid metadata in README.md.\n- {e}")));
                        }
                    }
                    ops.push(Op::Put(path, Blob::inline(bytes), false));
                }
                Some("lfsFile") => {
                    let path = path_of(value)?;
                    if value["algo"].as_str().unwrap_or("sha256") != "sha256" {
                        return Err(bad("only sha256 LFS objects are supported".into()));
                    }
                    let oid = value["oid"].as_str().unwrap_or_default().to_ascii_lowercase();
                    let size = value["size"].as_u64().ok_or_else(|| bad("missing `size`".into()))?;
                    let content = match st.xet.lookup(&self.cas_dir, &oid) {
                        Some(file) if file.size == size && file.segments.iter().all(|(x, _, _)| xorb_path(&self.cas_dir, x).is_file()) => Content::Xet(file),
                        _ if st.lfs_store.get(&oid).is_some_and(|b| b.len() as u64 == size) => Content::Lfs,
                        _ => {
                            return Err(Response::error(
                                400,
                                None,
                                &format!(
                                    "Your push was rejected because an LFS pointer pointed to a file that does not exist: {path} (sha256 {oid}, {size} bytes)"
                                ),
                            ))
                        }
                    };
                    ops.push(Op::Put(path, Blob::lfs(&oid, size, content), true));
                }
                Some("deletedFile") => {
                    let path = path_of(value)?;
                    if !head_tree.contains_key(&path) {
                        return Err(Response::error(404, Some("EntryNotFound"), &format!("File not found: {path}")));
                    }
                    ops.push(Op::Delete(path));
                }
                Some("deletedFolder") => ops.push(Op::DeleteFolder(path_of(value)?)),
                other => return Err(bad(format!("unknown key {other:?}"))),
            }
        }
        let header = header.ok_or_else(|| Response::error(400, None, "missing header line"))?;
        let summary = header["summary"].as_str().unwrap_or_default().trim().to_string();
        if summary.is_empty() {
            return Err(Response::error(400, None, "commit summary is required"));
        }
        let description = header["description"].as_str().unwrap_or_default().to_string();
        if let Some(parent) = header["parentCommit"].as_str() {
            if parent != head {
                return Err(Response::error(
                    412,
                    None,
                    &format!("A commit has happened since. Please refresh and try again. (parentCommit {parent}, head {head})"),
                ));
            }
        }
        let create_pr = req.query_flag("create_pr");
        let target = if create_pr { Target::NewPr(branch) } else { Target::Branch(branch) };
        let rec = st.apply_commit(&key, target, &summary, &description, ops);
        let prefix = url_prefix(kind);
        let mut out = json!({
            "success": true,
            "commitOid": rec.id,
            "commitUrl": format!("{}/{prefix}{id}/commit/{}", self.endpoint, rec.id),
            "commitMessage": summary,
            "commitDescription": description,
            "hookOutput": "",
        });
        if let Some(num) = rec.revision.strip_prefix("refs/pr/") {
            let url = format!("{}/{prefix}{id}/discussions/{num}", self.endpoint);
            out["pullRequestUrl"] = json!(url);
            out["prUrl"] = json!(url);
            out["prNum"] = json!(num.parse::<u64>().unwrap_or(0));
        }
        Ok(Response::json(200, &out))
    }

    fn resolve_file(&self, req: &Request, kind: &str, id: &str, rev: &str, path: &str) -> Result<Response, Response> {
        let blob = {
            let (st, key) = self.open_repo(req, kind, id, false)?;
            let repo = &st.repos[&key];
            let cid = repo.resolve(rev).ok_or_else(|| revision_not_found(rev))?;
            match repo.commits[&cid].tree.get(path) {
                Some(b) => (b.clone(), cid),
                None => {
                    return Err(
                        Response::error(404, Some("EntryNotFound"), &format!("Entry not found: {path}")).header("X-Repo-Commit", &cid)
                    )
                }
            }
        };
        let (blob, cid) = blob;
        let etag = format!("\"{}\"", blob.etag());
        let mut resp = Response::new(200)
            .header("X-Repo-Commit", &cid)
            .header("ETag", &etag)
            .header("Accept-Ranges", "bytes")
            .header("Content-Type", "application/octet-stream");
        if blob.is_lfs() {
            resp = resp.header("X-Linked-Etag", &etag).header("X-Linked-Size", &blob.size.to_string());
        }
        if let Content::Xet(file) = &blob.content {
            resp = resp.header("X-Xet-Hash", &file.hash).header(
                "Link",
                &format!(
                    "<{}/api/{kind}/{id}/xet-read-token/{cid}>; rel=\"xet-auth\", <local://{}>; rel=\"xet-reconstruction-info\"",
                    self.endpoint,
                    self.cas_dir.display()
                ),
            );
        }
        if req
            .header("if-none-match")
            .is_some_and(|v| v.split(',').any(|t| t.trim().trim_start_matches("W/") == etag))
        {
            resp.status = 304;
            return Ok(resp);
        }
        if req.method == "HEAD" {
            return Ok(resp.header("Content-Length", &blob.size.to_string()));
        }
        let bytes = self
            .blob_bytes(&blob)
            .map_err(|e| Response::error(500, None, &format!("cannot read {path} from storage: {e}")))?;
        match req.header("range").map(|r| parse_range(r, bytes.len() as u64)) {
            Some(Some(Ok((start, end)))) => {
                resp.status = 206;
                Ok(resp
                    .header("Content-Range", &format!("bytes {start}-{end}/{}", bytes.len()))
                    .body(bytes[start as usize..=end as usize].to_vec()))
            }
            Some(Some(Err(()))) => {
                Err(Response::error(416, None, "Range Not Satisfiable").header("Content-Range", &format!("bytes */{}", bytes.len())))
            }
            _ => Ok(resp.body(bytes)),
        }
    }

    fn tree(&self, req: &Request, kind: &str, id: &str, rev: &str, path: &str) -> Result<Response, Response> {
        let (st, key) = self.open_repo(req, kind, id, false)?;
        let repo = &st.repos[&key];
        let cid = repo.resolve(rev).ok_or_else(|| revision_not_found(rev))?;
        let recursive = req.query_flag("recursive");
        let expand = req.query_flag("expand");
        let entries = tree_entries(repo, &cid, path, recursive, expand)
            .ok_or_else(|| Response::error(404, Some("EntryNotFound"), &format!("{path} does not exist on \"{rev}\"")))?;
        let start: usize = req.query("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
        let page = self.opts.tree_page_size.max(1);
        let end = (start + page).min(entries.len());
        let mut resp = Response::json(200, &Value::Array(entries[start.min(end)..end].to_vec()));
        if end < entries.len() {
            let mut q = vec![format!("cursor={end}")];
            if recursive {
                q.push("recursive=true".into());
            }
            if expand {
                q.push("expand=true".into());
            }
            resp = resp.header(
                "Link",
                &format!("<{}{}?{}>; rel=\"next\"", self.endpoint, req.raw_path, q.join("&")),
            );
        }
        Ok(resp)
    }

    fn paths_info(&self, req: &Request, kind: &str, id: &str, rev: &str) -> Result<Response, Response> {
        // hf-hub sends JSON; huggingface_hub sends a form (`paths=a&paths=b&expand=true`).
        let form = req
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
        let (paths, expand): (Vec<String>, bool) = if form {
            let text = String::from_utf8_lossy(&req.body).into_owned();
            let pairs: Vec<(String, String)> = text
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (percent_decode(k, true), percent_decode(v, true)))
                .collect();
            let paths = pairs.iter().filter(|(k, _)| k == "paths").map(|(_, v)| v.clone()).collect();
            (paths, pairs.iter().any(|(k, v)| k == "expand" && v == "true"))
        } else {
            let body = req.json()?;
            let paths = body["paths"]
                .as_array()
                .map(|a| a.iter().filter_map(|p| p.as_str().map(String::from)).collect());
            (paths.unwrap_or_default(), body["expand"].as_bool().unwrap_or(false))
        };
        let (st, key) = self.open_repo(req, kind, id, false)?;
        let repo = &st.repos[&key];
        let cid = repo.resolve(rev).ok_or_else(|| revision_not_found(rev))?;
        let all = tree_entries(repo, &cid, "", true, expand).unwrap_or_default();
        let wanted: HashSet<&str> = paths.iter().map(|p| p.trim_matches('/')).collect();
        let found: Vec<Value> = all
            .into_iter()
            .filter(|e| e["path"].as_str().is_some_and(|p| wanted.contains(p)))
            .collect();
        Ok(Response::json(200, &Value::Array(found)))
    }

    fn create_tag(&self, req: &Request, kind: &str, id: &str, rev: &str) -> Result<Response, Response> {
        let body = req.json()?;
        let tag = body["tag"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Response::error(400, None, "missing `tag`"))?;
        let (mut st, key) = self.open_repo(req, kind, id, true)?;
        let repo = st.repos.get_mut(&key).expect("repo");
        let cid = repo.resolve(rev).ok_or_else(|| revision_not_found(rev))?;
        if repo.tags.contains_key(tag) {
            return Err(Response::error(409, None, &format!("Tag {tag} already exists")));
        }
        repo.tags.insert(tag.to_string(), cid);
        Ok(Response::json(200, &json!({})))
    }

    fn create_branch(&self, req: &Request, kind: &str, id: &str, branch: &str) -> Result<Response, Response> {
        let body = req.json()?;
        let (mut st, key) = self.open_repo(req, kind, id, true)?;
        let repo = st.repos.get_mut(&key).expect("repo");
        if repo.branches.contains_key(branch) {
            return Err(Response::error(409, None, &format!("Reference refs/heads/{branch} already exists")));
        }
        let from = body["startingPoint"].as_str().unwrap_or("main");
        let cid = repo.resolve(from).ok_or_else(|| revision_not_found(from))?;
        repo.branches.insert(branch.to_string(), cid);
        Ok(Response::json(200, &json!({})))
    }

    fn delete_ref(&self, req: &Request, kind: &str, id: &str, name: &str, branch: bool) -> Result<Response, Response> {
        let (mut st, key) = self.open_repo(req, kind, id, true)?;
        let repo = st.repos.get_mut(&key).expect("repo");
        if branch && name == "main" {
            return Err(Response::error(403, None, "Cannot delete the default branch"));
        }
        let map = if branch { &mut repo.branches } else { &mut repo.tags };
        match map.remove(name) {
            Some(_) => Ok(Response::json(200, &json!({}))),
            None => Err(revision_not_found(name)),
        }
    }

    fn refs(&self, req: &Request, kind: &str, id: &str) -> Result<Response, Response> {
        let (st, key) = self.open_repo(req, kind, id, false)?;
        let repo = &st.repos[&key];
        let list = |map: &BTreeMap<String, String>, prefix: &str| -> Vec<Value> {
            map.iter()
                .map(|(n, c)| json!({"name": n, "ref": format!("{prefix}{n}"), "targetCommit": c}))
                .collect()
        };
        let mut out = json!({
            "branches": list(&repo.branches, "refs/heads/"),
            "tags": list(&repo.tags, "refs/tags/"),
            "converts": [],
        });
        if req.query_flag("include_prs") {
            let prs: Vec<Value> = repo
                .prs
                .iter()
                .map(|(n, c)| json!({"name": n.to_string(), "ref": format!("refs/pr/{n}"), "targetCommit": c}))
                .collect();
            out["pullRequests"] = json!(prs);
        }
        Ok(Response::json(200, &out))
    }

    fn list_commits(&self, req: &Request, kind: &str, id: &str, rev: &str) -> Result<Response, Response> {
        let (st, key) = self.open_repo(req, kind, id, false)?;
        let repo = &st.repos[&key];
        let mut next = repo.resolve(rev);
        if next.is_none() {
            return Err(revision_not_found(rev));
        }
        let mut out = Vec::new();
        while let Some(cid) = next {
            let c = &repo.commits[&cid];
            let message = if c.rec.description.is_empty() {
                c.rec.summary.clone()
            } else {
                format!("{}\n\n{}", c.rec.summary, c.rec.description)
            };
            out.push(json!({
                "id": cid,
                "authors": [{"user": self.opts.user}],
                "date": iso8601(c.time),
                "title": c.rec.summary,
                "message": message,
                "parents": c.rec.parent.iter().collect::<Vec<_>>(),
            }));
            next = c.rec.parent.clone();
        }
        Ok(Response::json(200, &Value::Array(out)))
    }
}

fn kind_from_prefix(prefix: &[&str]) -> Option<&'static str> {
    match prefix {
        [] => Some("models"),
        ["datasets"] => Some("datasets"),
        ["spaces"] => Some("spaces"),
        _ => None,
    }
}

fn not_found() -> Response {
    Response::error(404, None, "Not Found")
}

fn repo_not_found() -> Response {
    Response::error(404, Some("RepoNotFound"), "Repository not found")
}

fn revision_not_found(rev: &str) -> Response {
    Response::error(404, Some("RevisionNotFound"), &format!("Invalid rev id: {rev}"))
}

/// Files and directories under `base` (`""` = root) at commit `cid`, directories first; `None`
/// if `base` is not a directory.
fn tree_entries(repo: &Repo, cid: &str, base: &str, recursive: bool, expand: bool) -> Option<Vec<Value>> {
    let commit = &repo.commits[cid];
    let base = base.trim_matches('/');
    let prefix = if base.is_empty() { String::new() } else { format!("{base}/") };
    let mut dirs = BTreeSet::new();
    let mut files = Vec::new();
    for (path, blob) in &commit.tree {
        let Some(rel) = path.strip_prefix(&prefix) else { continue };
        let parts: Vec<&str> = rel.split('/').collect();
        for depth in 1..parts.len() {
            if recursive || depth == 1 {
                dirs.insert(format!("{prefix}{}", parts[..depth].join("/")));
            }
        }
        if recursive || parts.len() == 1 {
            files.push((path, blob));
        }
    }
    if !base.is_empty() && dirs.is_empty() && files.is_empty() {
        return None;
    }
    let last_commit = |id: &str| {
        let c = &repo.commits[id];
        json!({"id": id, "title": c.rec.summary, "date": iso8601(c.time)})
    };
    let mut out: Vec<Value> = dirs
        .into_iter()
        .map(|d| {
            let mut e = json!({"type": "directory", "oid": sha1_hex(format!("{cid}:{d}").as_bytes()), "size": 0, "path": d});
            if expand {
                e["lastCommit"] = last_commit(cid);
            }
            e
        })
        .collect();
    for (path, b) in files {
        let mut e = json!({"type": "file", "oid": b.git_oid, "size": b.size, "path": path});
        if b.is_lfs() {
            e["lfs"] = json!({"oid": b.sha256, "sha256": b.sha256, "size": b.size, "pointerSize": lfs_pointer(&b.sha256, b.size).len()});
        }
        if let Content::Xet(file) = &b.content {
            e["xetHash"] = json!(file.hash);
        }
        if expand {
            e["lastCommit"] = last_commit(&b.last_commit);
        }
        out.push(e);
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// Hub rules

/// The LFS patterns of the Hub's default `.gitattributes`.
const DEFAULT_LFS_PATTERNS: &[&str] = &[
    "*.7z",
    "*.arrow",
    "*.bin",
    "*.bz2",
    "*.ckpt",
    "*.ftz",
    "*.gz",
    "*.h5",
    "*.joblib",
    "*.lfs.*",
    "*.mlmodel",
    "*.model",
    "*.msgpack",
    "*.npy",
    "*.npz",
    "*.onnx",
    "*.ot",
    "*.parquet",
    "*.pb",
    "*.pickle",
    "*.pkl",
    "*.pt",
    "*.pth",
    "*.rar",
    "*.safetensors",
    "saved_model/**/*",
    "*.tar.*",
    "*.tar",
    "*.tflite",
    "*.tgz",
    "*.wasm",
    "*.xz",
    "*.zip",
    "*.zst",
    "*tfevents*",
];

/// Files above this size must go through LFS/xet on the Hub.
const MAX_REGULAR_FILE: u64 = 10 * 1024 * 1024;

fn default_gitattributes() -> String {
    DEFAULT_LFS_PATTERNS
        .iter()
        .map(|p| format!("{p} filter=lfs diff=lfs merge=lfs -text\n"))
        .collect()
}

/// The `filter=lfs` patterns of the tree's `.gitattributes` (the defaults if it has none).
fn lfs_patterns(tree: &BTreeMap<String, Blob>) -> Vec<String> {
    match tree.get(".gitattributes").map(|b| &b.content) {
        Some(Content::Inline(bytes)) => String::from_utf8_lossy(bytes)
            .lines()
            .filter_map(|l| {
                let mut parts = l.split_whitespace();
                let pattern = parts.next().filter(|p| !p.starts_with('#'))?;
                parts.any(|a| a == "filter=lfs").then(|| pattern.to_string())
            })
            .collect(),
        _ => DEFAULT_LFS_PATTERNS.iter().map(|p| p.to_string()).collect(),
    }
}

/// The preupload decision: LFS-tracked path, binary sample, or too big for a regular file.
fn needs_lfs(patterns: &[String], path: &str, size: u64, sample: &[u8]) -> bool {
    if size == 0 {
        return false;
    }
    let basename = path.rsplit('/').next().unwrap_or(path);
    let tracked = patterns.iter().any(|p| {
        if p.trim_start_matches('/').contains('/') {
            glob_match(p.trim_start_matches('/').as_bytes(), path.as_bytes())
        } else {
            glob_match(p.as_bytes(), basename.as_bytes())
        }
    });
    tracked || size > MAX_REGULAR_FILE || is_binary(sample)
}

/// NUL bytes or invalid UTF-8 (an incomplete sequence at the end of a sample is fine).
fn is_binary(sample: &[u8]) -> bool {
    let sample = &sample[..sample.len().min(512)];
    sample.contains(&0) || std::str::from_utf8(sample).is_err_and(|e| e.error_len().is_some())
}

/// gitattributes-style glob: `*` and `?` stop at `/`, `**` crosses directories.
fn glob_match(p: &[u8], s: &[u8]) -> bool {
    if let Some(rest) = p.strip_prefix(b"**/") {
        return glob_match(rest, s) || s.iter().enumerate().any(|(i, c)| *c == b'/' && glob_match(rest, &s[i + 1..]));
    }
    if let Some(rest) = p.strip_prefix(b"**") {
        return (0..=s.len()).any(|i| glob_match(rest, &s[i..]));
    }
    match p.first() {
        None => s.is_empty(),
        Some(b'*') => {
            for i in 0..=s.len() {
                if glob_match(&p[1..], &s[i..]) {
                    return true;
                }
                if i < s.len() && s[i] == b'/' {
                    break;
                }
            }
            false
        }
        Some(b'?') => s.first().is_some_and(|c| *c != b'/') && glob_match(&p[1..], &s[1..]),
        Some(c) => s.first() == Some(c) && glob_match(&p[1..], &s[1..]),
    }
}

fn valid_repo_path(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && !p.contains('\\')
        && p.split('/').all(|s| !s.is_empty() && s != "." && s != "..")
        && p.split('/').next() != Some(".git")
}

/// The YAML front matter of a model card as JSON: `Ok(None)` without front matter, `Err` if it
/// is not a YAML mapping (the Hub rejects such a README).
fn front_matter(readme: &[u8]) -> Result<Option<Value>, String> {
    let text = std::str::from_utf8(readme).map_err(|e| format!("README.md is not UTF-8: {e}"))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let Some(rest) = text.strip_prefix("---\n").or_else(|| text.strip_prefix("---\r\n")) else {
        return Ok(None);
    };
    let mut offset = 0;
    let mut yaml_end = None;
    for line in rest.split_inclusive('\n') {
        if line.trim_end() == "---" {
            yaml_end = Some(offset);
            break;
        }
        offset += line.len();
    }
    let Some(end) = yaml_end else { return Ok(None) };
    let value: Value = serde_yaml::from_str(&rest[..end]).map_err(|e| e.to_string())?;
    match value {
        Value::Null => Ok(Some(json!({}))),
        Value::Object(_) => Ok(Some(value)),
        _ => Err("the metadata must be a YAML mapping".into()),
    }
}

fn lfs_pointer(sha256: &str, size: u64) -> String {
    format!("version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n")
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` → inclusive `(start, end)`; `None` to ignore the header
/// (multiple ranges, junk), `Some(Err)` for 416.
fn parse_range(header: &str, len: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if len == 0 {
        return Some(Err(()));
    }
    if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        return Some(if n == 0 { Err(()) } else { Ok((len.saturating_sub(n), len - 1)) });
    }
    let start: u64 = a.parse().ok()?;
    let end: u64 = if b.is_empty() {
        len - 1
    } else {
        b.parse::<u64>().ok()?.min(len - 1)
    };
    Some(if start >= len || start > end { Err(()) } else { Ok((start, end)) })
}

// ---------------------------------------------------------------------------------------------
// Small helpers

fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let escaped = (b[i] == b'%' && i + 3 <= b.len() && b[i + 1..i + 3].iter().all(u8::is_ascii_hexdigit))
            .then(|| u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).ok()?, 16).ok())
            .flatten();
        match (escaped, b[i]) {
            (Some(v), _) => {
                out.push(v);
                i += 3;
                continue;
            }
            (None, b'+') if plus_is_space => out.push(b' '),
            (None, c) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `YYYY-MM-DDTHH:MM:SS.000Z` (civil-from-days, H. Hinnant).
fn iso8601(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000Z", rem / 3600, rem / 60 % 60, rem % 60)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// `git hash-object` of a blob.
fn git_blob_oid(content: &[u8]) -> String {
    let mut data = format!("blob {}\0", content.len()).into_bytes();
    data.extend_from_slice(content);
    sha1_hex(&data)
}

fn sha1_hex(data: &[u8]) -> String {
    hex(&sha1(data))
}

/// SHA-1 (FIPS 180-4), for git object ids; nothing in the dependency tree provides it.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64).wrapping_mul(8)).to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a.rotate_left(5).wrapping_add(f).wrapping_add(e).wrapping_add(k).wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (hi, v) in h.iter_mut().zip([a, b, c, d, e]) {
            *hi = hi.wrapping_add(v);
        }
    }
    let mut out = [0u8; 20];
    for (chunk, v) in out.chunks_exact_mut(4).zip(h) {
        chunk.copy_from_slice(&v.to_be_bytes());
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Tests: hf-hub 1.0.0 against the fake

mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::path::Path;
    use std::time::{Duration, Instant};

    use base64::Engine as _;
    use hf_hub::repository::{CommitOperation, RepoTreeEntry};
    use hf_hub::{HFClientBuilder, HFClientSync, HFError, RepoTypeModel};
    use serde_json::json;
    use xet_core_structures::metadata_shard::streaming_shard::MDBMinimalShard;

    use super::{git_blob_oid, sha1_hex, FakeHub, FakeHubOptions, LfsTransfer};

    /// An hf-hub client for `hub` with an explicit token (so no ambient `HF_TOKEN` or token file
    /// is used), its own cache, and fast retries (2 retries, 1 ms base delay).
    fn client(hub: &FakeHub, token: &str, cache: &Path) -> HFClientSync {
        HFClientBuilder::new()
            .endpoint(&hub.endpoint)
            .token(token)
            .cache_dir(cache)
            .retry_max_attempts(2)
            .retry_base_delay(Duration::from_millis(1))
            .build_sync()
            .expect("hf-hub client")
    }

    /// Incompressible, deterministic bytes (xorshift64*).
    fn noise(len: usize, mut seed: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            out.extend_from_slice(&seed.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// A checkpoint folder as `moco push` lays it out: model card, config, and a safetensors file
    /// of about `model_len` bytes (one F32 tensor of noise).
    fn checkpoint_folder(dir: &Path, model_len: usize) -> Vec<(&'static str, Vec<u8>)> {
        let readme = b"---\nlibrary_name: candle\nlicense: mit\ntags: [moco, self-supervised-learning]\npipeline_tag: image-feature-extraction\n---\n# MoCo v2 (ResNet-18)\n".to_vec();
        let config = br#"{"arch":"resnet18","dim":128,"queue_size":4096,"momentum":0.999,"temperature":0.2,"mlp":true}"#.to_vec();
        let n = model_len / 4;
        let mut header = format!(
            r#"{{"__metadata__":{{"format":"pt"}},"encoder_q.fc.weight":{{"dtype":"F32","shape":[{n}],"data_offsets":[0,{}]}}}}"#,
            4 * n
        );
        while header.len() % 8 != 0 {
            header.push(' ');
        }
        let mut model = (header.len() as u64).to_le_bytes().to_vec();
        model.extend_from_slice(header.as_bytes());
        model.extend(noise(4 * n, 0x9E37_79B9_7F4A_7C15));
        let files = vec![("README.md", readme), ("config.json", config), ("model.safetensors", model)];
        std::fs::create_dir_all(dir).unwrap();
        for (name, bytes) in &files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        files
    }

    fn file_entries(tree: &[RepoTreeEntry]) -> Vec<(String, bool, Option<String>)> {
        let mut out: Vec<_> = tree
            .iter()
            .filter_map(|e| match e {
                RepoTreeEntry::File { path, lfs, xet_hash, .. } => Some((path.clone(), lfs.is_some(), xet_hash.clone())),
                RepoTreeEntry::Directory { .. } => None,
            })
            .collect();
        out.sort();
        out
    }

    fn http_status(err: &HFError) -> Option<u16> {
        match err {
            HFError::Http { context }
            | HFError::AuthRequired { context }
            | HFError::Forbidden { context }
            | HFError::Conflict { context } => Some(context.status.as_u16()),
            HFError::RepoNotFound { context, .. } | HFError::RevisionNotFound { context, .. } | HFError::EntryNotFound { context, .. } => {
                context.as_ref().map(|c| c.status.as_u16())
            }
            _ => None,
        }
    }

    /// One raw HTTP/1.1 exchange: (status, lower-case headers, body).
    fn raw(hub: &FakeHub, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let addr = hub.endpoint.trim_start_matches("http://");
        let mut s = TcpStream::connect(addr).unwrap();
        let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding")) {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).unwrap();
        let split = resp.windows(4).position(|w| w == b"\r\n\r\n").expect("end of response head");
        let text = String::from_utf8_lossy(&resp[..split]).into_owned();
        let mut lines = text.split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        (status, headers, resp[split + 4..].to_vec())
    }

    fn hdr<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        super::find_header(headers, name)
    }

    /// (1) The production path: one commit carrying text inline and the safetensors through
    /// hf-xet into the `local://` CAS; downloads through the cache (xet for the model),
    /// `snapshot_download`, tree listing, a ranged read, tags, and 304 revalidation.
    #[test]
    fn xet_folder_round_trip() {
        let t0 = Instant::now();
        let hub = FakeHub::start(FakeHubOptions::default());
        let tmp = tempfile::tempdir().unwrap();
        let folder = tmp.path().join("checkpoint");
        let files = checkpoint_folder(&folder, 3 << 20);
        let model = &files[2].1;
        let api = client(&hub, FakeHub::TOKEN, &tmp.path().join("cache-up"));

        let url = api
            .create_repository()
            .repo_id("tester/moco-xet")
            .repo_type(RepoTypeModel)
            .send()
            .unwrap();
        assert_eq!(url.url, format!("{}/tester/moco-xet", hub.endpoint));
        let again = api.create_repository().repo_id("tester/moco-xet").repo_type(RepoTypeModel).send();
        assert!(matches!(again, Err(HFError::Conflict { .. })), "{again:?}");
        api.create_repository()
            .repo_id("tester/moco-xet")
            .repo_type(RepoTypeModel)
            .exist_ok(true)
            .send()
            .unwrap();
        assert_eq!(hub.repos(), vec!["models/tester/moco-xet".to_string()]);

        let repo = api.model("tester", "moco-xet");
        let info = repo
            .upload_folder()
            .folder_path(&folder)
            .commit_message("Upload MoCo checkpoint (epoch 10)")
            .send()
            .unwrap();
        let oid = info.commit_oid.clone().expect("commitOid");
        assert!(oid.len() == 40 && oid.bytes().all(|c| c.is_ascii_hexdigit()), "{oid}");
        assert_eq!(
            info.commit_url.as_deref(),
            Some(format!("{}/tester/moco-xet/commit/{oid}", hub.endpoint).as_str())
        );

        // One commit, text inline, the model as an lfsFile pointing into the CAS.
        let commits = hub.commits("tester/moco-xet");
        assert_eq!(commits.len(), 2, "initial commit + upload");
        let c = &commits[1];
        assert_eq!(
            (c.id.as_str(), c.revision.as_str(), c.parent.as_deref()),
            (oid.as_str(), "main", Some(commits[0].id.as_str()))
        );
        assert_eq!(c.summary, "Upload MoCo checkpoint (epoch 10)");
        assert_eq!(c.description, "");
        let mut added = c.added.clone();
        added.sort();
        assert_eq!(added, ["README.md", "config.json", "model.safetensors"]);
        assert_eq!(c.lfs_files, ["model.safetensors"]);
        assert!(c.deleted.is_empty());
        assert_eq!(c.files, [".gitattributes", "README.md", "config.json", "model.safetensors"]);
        assert_eq!(hub.branches("tester/moco-xet")["main"], oid);

        let reqs = hub.requests();
        let commit_calls: Vec<_> = reqs.iter().filter(|r| r.path.contains("/commit/")).collect();
        assert_eq!(commit_calls.len(), 1);
        assert_eq!((commit_calls[0].method.as_str(), commit_calls[0].status), ("POST", 200));
        assert_eq!(commit_calls[0].header("content-type"), Some("application/x-ndjson"));
        assert_eq!(
            commit_calls[0].header("authorization"),
            Some(format!("Bearer {}", FakeHub::TOKEN).as_str())
        );
        let ndjson = commit_calls[0].body_text();
        assert!(ndjson.contains(r#""key":"lfsFile""#) && ndjson.len() < 4096, "{ndjson}");
        let batch = reqs
            .iter()
            .find(|r| r.path.ends_with(".git/info/lfs/objects/batch"))
            .expect("LFS batch call");
        assert!(batch.body_text().contains(r#""xet""#));
        assert!(reqs
            .iter()
            .any(|r| r.path == "/api/models/tester/moco-xet/xet-write-token/main" && r.status == 200));
        let preupload = reqs.iter().find(|r| r.path.ends_with("/preupload/main")).expect("preupload call");
        assert!(preupload.body_text().contains("model.safetensors"));

        // The server sees the bytes hf-xet wrote.
        assert_eq!(hub.file("tester/moco-xet", "main", "model.safetensors").as_ref(), Some(model));
        assert_eq!(hub.file("tester/moco-xet", &oid, "config.json").as_ref(), Some(&files[1].1));
        let xet_hash = hub.xet_hash("tester/moco-xet", "main", "model.safetensors").expect("stored in xet");
        assert_eq!(hub.xet_hash("tester/moco-xet", "main", "README.md"), None);
        // How the server found it: the shard hf-xet stored in the local CAS names the file by its
        // xet hash and carries its sha256 (the lfsFile oid) in the metadata extension.
        let mut shard_entries = 0;
        for entry in std::fs::read_dir(super::local_cas_root(&hub.cas_dir).join("shards"))
            .unwrap()
            .flatten()
        {
            if entry.path().extension().is_some_and(|e| e == "mdb") {
                let bytes = std::fs::read(entry.path()).unwrap();
                let shard = MDBMinimalShard::from_reader(&mut std::io::Cursor::new(&bytes), true, false).unwrap();
                for i in 0..shard.num_files() {
                    let view = shard.file(i).unwrap();
                    if view.file_hash().hex() == xet_hash {
                        assert_eq!(view.metadata_ext().map(|m| m.sha256.hex()), Some(super::sha256_hex(model)));
                        shard_entries += 1;
                    }
                }
            }
        }
        assert_eq!(shard_entries, 1);

        // Downloads through the cache: the model through hf-xet (no GET of its resolve URL).
        hub.clear_requests();
        let down = client(&hub, FakeHub::TOKEN, &tmp.path().join("cache-down"));
        let down_repo = down.model("tester", "moco-xet");
        for (name, bytes) in &files {
            let path = down_repo.download_file().filename(*name).send().unwrap();
            assert!(
                path.starts_with(tmp.path().join("cache-down")) && path.to_string_lossy().contains(&oid),
                "{path:?}"
            );
            assert_eq!(&std::fs::read(&path).unwrap(), bytes, "{name}");
        }
        let reqs = hub.requests();
        assert!(reqs.iter().any(|r| r.path.contains("/xet-read-token/")));
        assert!(!reqs
            .iter()
            .any(|r| r.method == "GET" && r.path.ends_with("/resolve/main/model.safetensors")));
        assert!(reqs
            .iter()
            .any(|r| r.method == "GET" && r.path.ends_with("/resolve/main/config.json")));

        // A second download revalidates with If-None-Match and gets 304.
        hub.clear_requests();
        down_repo.download_file().filename("config.json").send().unwrap();
        let head = hub.requests().into_iter().find(|r| r.method == "HEAD").expect("HEAD");
        assert_eq!(head.status, 304, "{:?}", head.header("if-none-match"));

        // Ranged read of the xet file (hf-xet streams the range).
        let part = down_repo
            .download_file_to_bytes()
            .filename("model.safetensors")
            .range(1000..5000)
            .send()
            .unwrap();
        assert_eq!(&part[..], &model[1000..5000]);

        // snapshot_download and tree listing.
        let snap = client(&hub, FakeHub::TOKEN, &tmp.path().join("cache-snap"));
        let dir = snap.model("tester", "moco-xet").snapshot_download().send().unwrap();
        assert!(dir.ends_with(&oid));
        for (name, bytes) in &files {
            assert_eq!(&std::fs::read(dir.join(name)).unwrap(), bytes, "{name}");
        }
        assert!(dir.join(".gitattributes").is_file());
        let tree = repo.list_tree().recursive(true).send().unwrap();
        assert_eq!(
            file_entries(&tree),
            vec![
                (".gitattributes".into(), false, None),
                ("README.md".into(), false, None),
                ("config.json".into(), false, None),
                ("model.safetensors".into(), true, Some(xet_hash)),
            ]
        );
        let info = repo.info().send().unwrap();
        assert_eq!(info.sha.as_deref(), Some(oid.as_str()));
        assert_eq!(info.library_name.as_deref(), Some("candle"));
        assert_eq!(info.siblings.map(|s| s.len()), Some(4));

        // Tag the checkpoint and read through the tag.
        repo.create_tag().tag("epoch-10").send().unwrap();
        assert_eq!(hub.tags("tester/moco-xet")["epoch-10"], oid);
        let p = down_repo
            .download_file()
            .filename("model.safetensors")
            .revision("epoch-10")
            .send()
            .unwrap();
        assert_eq!(&std::fs::read(p).unwrap(), model);
        eprintln!("xet_folder_round_trip: {:?}", t0.elapsed());
    }

    /// (2) Basic transfer: hf-hub falls back to inline base64 for the safetensors; downloads are
    /// plain GETs. With `reject_inline_binaries` the fake refuses that commit as the Hub does.
    #[test]
    fn basic_folder_round_trip() {
        let t0 = Instant::now();
        let hub = FakeHub::start(FakeHubOptions {
            lfs_transfer: LfsTransfer::Basic,
            ..FakeHubOptions::default()
        });
        let tmp = tempfile::tempdir().unwrap();
        let folder = tmp.path().join("checkpoint");
        let files = checkpoint_folder(&folder, 3 << 20);
        let model = &files[2].1;
        let api = client(&hub, FakeHub::TOKEN, &tmp.path().join("cache-up"));
        api.create_repository()
            .repo_id("tester/moco-basic")
            .repo_type(RepoTypeModel)
            .send()
            .unwrap();
        let repo = api.model("tester", "moco-basic");
        let info = repo
            .upload_folder()
            .folder_path(&folder)
            .commit_message("Upload MoCo checkpoint")
            .send()
            .unwrap();
        let oid = info.commit_oid.unwrap();

        let reqs = hub.requests();
        let batch = reqs
            .iter()
            .find(|r| r.path.ends_with(".git/info/lfs/objects/batch"))
            .expect("LFS batch call");
        assert_eq!(batch.status, 200);
        assert!(!reqs.iter().any(|r| r.path.contains("xet-write-token")));
        let commit = reqs.iter().find(|r| r.path.contains("/commit/main")).unwrap();
        assert!(commit.body.len() > model.len() * 4 / 3, "the model travels inline as base64");
        assert!(!commit.body_text().contains("lfsFile"));
        let last = hub.commits("tester/moco-basic").pop().unwrap();
        assert_eq!(last.id, oid);
        assert!(last.lfs_files.is_empty());
        assert_eq!(hub.file("tester/moco-basic", "main", "model.safetensors").as_ref(), Some(model));
        assert_eq!(hub.xet_hash("tester/moco-basic", "main", "model.safetensors"), None);

        hub.clear_requests();
        let down = client(&hub, FakeHub::TOKEN, &tmp.path().join("cache-down"));
        for (name, bytes) in &files {
            let path = down.model("tester", "moco-basic").download_file().filename(*name).send().unwrap();
            assert_eq!(&std::fs::read(path).unwrap(), bytes, "{name}");
        }
        let reqs = hub.requests();
        assert!(reqs
            .iter()
            .any(|r| r.method == "GET" && r.path.ends_with("/resolve/main/model.safetensors") && r.status == 200));
        assert!(!reqs.iter().any(|r| r.path.contains("xet-read-token")));
        let dir = down.model("tester", "moco-basic").snapshot_download().send().unwrap();
        for (name, bytes) in &files {
            assert_eq!(&std::fs::read(dir.join(name)).unwrap(), bytes, "{name}");
        }
        let tree = repo.list_tree().recursive(true).send().unwrap();
        assert_eq!(file_entries(&tree).len(), 4);
        assert!(file_entries(&tree).iter().all(|(_, lfs, xet)| !lfs && xet.is_none()));

        // A Hub that rejects binaries outside LFS/xet turns that fallback into an error.
        let strict = FakeHub::start(FakeHubOptions {
            lfs_transfer: LfsTransfer::Basic,
            reject_inline_binaries: true,
            ..FakeHubOptions::default()
        });
        let api = client(&strict, FakeHub::TOKEN, &tmp.path().join("cache-strict"));
        api.create_repository()
            .repo_id("tester/moco-strict")
            .repo_type(RepoTypeModel)
            .send()
            .unwrap();
        let err = api
            .model("tester", "moco-strict")
            .upload_folder()
            .folder_path(&folder)
            .send()
            .unwrap_err();
        assert_eq!(http_status(&err), Some(400), "{err}");
        assert!(err.to_string().contains("binary files"), "{err}");
        assert_eq!(strict.commits("tester/moco-strict").len(), 1);
        eprintln!("basic_folder_round_trip: {:?}", t0.elapsed());
    }

    /// (3) A token the Hub does not know: 401 everywhere, nothing committed.
    #[test]
    fn wrong_token_is_rejected_and_commits_nothing() {
        let t0 = Instant::now();
        let hub = FakeHub::start(FakeHubOptions::default());
        let tmp = tempfile::tempdir().unwrap();
        let good = client(&hub, FakeHub::TOKEN, &tmp.path().join("cache-good"));
        good.create_repository()
            .repo_id("tester/moco-auth")
            .repo_type(RepoTypeModel)
            .send()
            .unwrap();
        good.create_repository()
            .repo_id("tester/private")
            .repo_type(RepoTypeModel)
            .private(true)
            .send()
            .unwrap();

        let bad = client(&hub, "hf_not_a_real_token", &tmp.path().join("cache-bad"));
        let err = bad
            .create_repository()
            .repo_id("tester/other")
            .repo_type(RepoTypeModel)
            .send()
            .unwrap_err();
        assert!(matches!(err, HFError::AuthRequired { .. }), "{err}");
        let err = bad
            .model("tester", "moco-auth")
            .upload_file()
            .source(hf_hub::repository::AddSource::bytes(b"{}".to_vec()))
            .path_in_repo("config.json")
            .send()
            .unwrap_err();
        assert!(matches!(err, HFError::AuthRequired { .. }), "{err}");
        assert!(err.to_string().contains("Invalid credentials"), "{err}");
        assert_eq!(hub.commits("tester/moco-auth").len(), 1, "only the initial commit");
        assert!(!hub.requests().iter().any(|r| r.path.contains("/commit/")), "stopped at preupload");
        let err = bad
            .model("tester", "moco-auth")
            .download_file()
            .filename(".gitattributes")
            .send()
            .unwrap_err();
        assert_eq!(http_status(&err), Some(401), "{err}");
        assert_eq!(hub.repos().len(), 2);

        // Private repos are invisible without a valid token, readable with one.
        let (status, headers, _) = raw(&hub, "HEAD", "/tester/private/resolve/main/.gitattributes", &[], b"");
        assert_eq!((status, hdr(&headers, "x-error-code")), (401, Some("RepoNotFound")));
        assert!(good
            .model("tester", "private")
            .download_file()
            .filename(".gitattributes")
            .send()
            .is_ok());
        // Writes without any token.
        let (status, _, body) = raw(
            &hub,
            "POST",
            "/api/repos/create",
            &[("Content-Type", "application/json")],
            br#"{"name":"x"}"#,
        );
        assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
        eprintln!("wrong_token_is_rejected_and_commits_nothing: {:?}", t0.elapsed());
    }

    /// (4) hf-hub retries a commit that answers 503 (its retry layer treats 408/429/5xx as
    /// transient): two failures then success make one commit; more failures than retries
    /// surface the 503 and commit nothing.
    #[test]
    fn commit_503_is_retried() {
        let t0 = Instant::now();
        let hub = FakeHub::start(FakeHubOptions::default());
        let tmp = tempfile::tempdir().unwrap();
        let api = client(&hub, FakeHub::TOKEN, &tmp.path().join("cache"));
        api.create_repository()
            .repo_id("tester/moco-retry")
            .repo_type(RepoTypeModel)
            .send()
            .unwrap();
        let repo = api.model("tester", "moco-retry");

        hub.fail_next("/commit/", 503, 2);
        let info = repo
            .upload_file()
            .source(hf_hub::repository::AddSource::bytes(br#"{"arch":"resnet18"}"#.to_vec()))
            .path_in_repo("config.json")
            .send()
            .unwrap();
        let statuses: Vec<u16> = hub
            .requests()
            .iter()
            .filter(|r| r.path.contains("/commit/"))
            .map(|r| r.status)
            .collect();
        assert_eq!(statuses, [503, 503, 200]);
        let commits = hub.commits("tester/moco-retry");
        assert_eq!(commits.len(), 2);
        assert_eq!(Some(commits[1].id.clone()), info.commit_oid);
        assert_eq!(commits[1].summary, "Upload config.json");

        // 1 try + 2 retries, all 503: the error is reported, nothing is committed.
        hub.clear_requests();
        hub.fail_next("/commit/", 503, 3);
        let err = repo
            .upload_file()
            .source(hf_hub::repository::AddSource::bytes(b"v2".to_vec()))
            .path_in_repo("notes.txt")
            .send()
            .unwrap_err();
        assert_eq!(http_status(&err), Some(503), "{err}");
        assert_eq!(hub.requests().iter().filter(|r| r.path.contains("/commit/")).count(), 3);
        assert_eq!(hub.commits("tester/moco-retry").len(), 2);
        assert!(t0.elapsed() < Duration::from_secs(5));
        eprintln!("commit_503_is_retried: {:?}", t0.elapsed());
    }

    /// Commit validation through hf-hub: `parentCommit` (412), a branch that does not exist
    /// (404 RevisionNotFound on the wire; hf-hub calls it RepoNotFound), branches, PRs, deletes.
    #[test]
    fn commit_rules() {
        let t0 = Instant::now();
        let hub = FakeHub::start(FakeHubOptions::default());
        let tmp = tempfile::tempdir().unwrap();
        let api = client(&hub, FakeHub::TOKEN, &tmp.path().join("cache"));
        api.create_repository()
            .repo_id("tester/rules")
            .repo_type(RepoTypeModel)
            .send()
            .unwrap();
        let repo = api.model("tester", "rules");
        let head = hub.branches("tester/rules")["main"].clone();

        let add = |path: &str, bytes: &[u8]| vec![CommitOperation::add_bytes(path.to_string(), bytes.to_vec())];
        let err = repo
            .create_commit()
            .operations(add("a.txt", b"a"))
            .commit_message("stale")
            .parent_commit("0".repeat(40))
            .send()
            .unwrap_err();
        assert_eq!(http_status(&err), Some(412), "{err}");
        let ok = repo
            .create_commit()
            .operations(add("a.txt", b"a"))
            .commit_message("fresh")
            .commit_description("with a parent")
            .parent_commit(head.clone())
            .send()
            .unwrap();
        let main1 = ok.commit_oid.unwrap();

        let err = repo
            .upload_file()
            .source(hf_hub::repository::AddSource::bytes(b"x".to_vec()))
            .path_in_repo("x.txt")
            .revision("nope")
            .send()
            .unwrap_err();
        assert!(matches!(err, HFError::RepoNotFound { .. }), "{err}");
        let wire = hub.requests().into_iter().rev().find(|r| r.path.contains("/nope")).unwrap();
        assert_eq!((wire.status, wire.header("authorization").is_some()), (404, true));

        repo.create_branch().branch("dev").send().unwrap();
        let dev = repo
            .upload_file()
            .source(hf_hub::repository::AddSource::bytes(b"dev".to_vec()))
            .path_in_repo("dev.txt")
            .revision("dev")
            .send()
            .unwrap();
        assert_eq!(hub.branches("tester/rules")["dev"], dev.commit_oid.unwrap());
        assert_eq!(hub.branches("tester/rules")["main"], main1);
        assert_eq!(hub.file("tester/rules", "dev", "dev.txt").as_deref(), Some(&b"dev"[..]));
        assert_eq!(hub.file("tester/rules", "main", "dev.txt"), None);

        let pr = repo
            .upload_file()
            .source(hf_hub::repository::AddSource::bytes(b"pr".to_vec()))
            .path_in_repo("pr.txt")
            .create_pr(true)
            .send()
            .unwrap();
        assert_eq!(pr.pr_num, Some(1));
        assert_eq!(hub.file("tester/rules", "refs/pr/1", "pr.txt").as_deref(), Some(&b"pr"[..]));
        assert_eq!(hub.branches("tester/rules")["main"], main1);
        let via_pr = repo
            .download_file_to_bytes()
            .filename("pr.txt")
            .revision("refs/pr/1")
            .send()
            .unwrap();
        assert_eq!(&via_pr[..], b"pr");

        repo.delete_file().path_in_repo("a.txt").send().unwrap();
        let last = hub.commits("tester/rules").pop().unwrap();
        assert_eq!(
            (last.deleted.as_slice(), last.files.as_slice()),
            (&["a.txt".to_string()][..], &[".gitattributes".to_string()][..])
        );
        let refs = repo.list_refs().include_pull_requests(true).send().unwrap();
        assert_eq!(refs.branches.len(), 2);
        assert_eq!(refs.pull_requests.len(), 1);
        let log = repo.list_commits().send().unwrap();
        assert_eq!(log.len(), 3);
        assert_eq!(log[1].message, "fresh\n\nwith a parent");
        eprintln!("commit_rules: {:?}", t0.elapsed());
    }

    /// The server itself, over raw HTTP: chunked bodies, all-or-nothing NDJSON validation, HEAD
    /// 404s, ranges, tree pagination (through hf-hub), paths-info, whoami, injected failures.
    #[test]
    fn wire_details() {
        let t0 = Instant::now();
        assert_eq!(sha1_hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(git_blob_oid(b"hello\n"), "ce013625030ba8dba906f756967f9e9ca394464a");
        let hub = FakeHub::start(FakeHubOptions {
            tree_page_size: 2,
            ..FakeHubOptions::default()
        });
        let auth = format!("Bearer {}", FakeHub::TOKEN);
        let auth = auth.as_str();
        let seeded = hub.seed_commit(
            "tester/wire",
            "main",
            &[
                ("weights/a.bin", &noise(1000, 1)[..]),
                ("weights/b.bin", &b"bb"[..]),
                ("notes.md", &b"# n\n"[..]),
            ],
            "seed",
        );
        assert_eq!(hub.commits("tester/wire").len(), 2);

        // A chunked NDJSON commit.
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let line1 = json!({"key": "header", "value": {"summary": "raw commit", "description": "", "parentCommit": seeded}}).to_string();
        let line2 = json!({"key": "file", "value": {"path": "notes/a.txt", "content": b64(b"hello\n"), "encoding": "base64"}}).to_string();
        let body = format!(
            "{:x}\r\n{line1}\n\r\n{:x}\r\n{line2}\n\r\n0\r\n\r\n",
            line1.len() + 1,
            line2.len() + 1
        );
        let (status, _, resp) = raw(
            &hub,
            "POST",
            "/api/models/tester/wire/commit/main",
            &[
                ("Authorization", auth),
                ("Transfer-Encoding", "chunked"),
                ("Content-Type", "application/x-ndjson"),
            ],
            body.as_bytes(),
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
        let resp: serde_json::Value = serde_json::from_slice(&resp).unwrap();
        let raw_commit = resp["commitOid"].as_str().unwrap().to_string();
        assert_eq!(
            hub.file("tester/wire", &raw_commit, "notes/a.txt").as_deref(),
            Some(&b"hello\n"[..])
        );

        // All or nothing: a good file line plus an lfsFile whose object is nowhere → 400, no commit.
        let bad = [
            json!({"key": "header", "value": {"summary": "half"}}),
            json!({"key": "file", "value": {"path": "half.txt", "content": b64(b"x"), "encoding": "base64"}}),
            json!({"key": "lfsFile", "value": {"path": "w.safetensors", "algo": "sha256", "oid": "ab".repeat(32), "size": 10}}),
        ]
        .iter()
        .map(|l| format!("{l}\n"))
        .collect::<String>();
        let (status, headers, resp) = raw(
            &hub,
            "POST",
            "/api/models/tester/wire/commit/main",
            &[("Authorization", auth)],
            bad.as_bytes(),
        );
        assert_eq!(status, 400);
        assert!(String::from_utf8_lossy(&resp).contains("does not exist"));
        assert!(hdr(&headers, "x-error-message").is_some());
        assert_eq!(hub.commits("tester/wire").len(), 3);
        assert_eq!(hub.file("tester/wire", "main", "half.txt"), None);
        let (status, headers, _) = raw(
            &hub,
            "POST",
            "/api/models/tester/wire/commit/nope",
            &[("Authorization", auth)],
            line1.as_bytes(),
        );
        assert_eq!((status, hdr(&headers, "x-error-code")), (404, Some("RevisionNotFound")));

        // HEAD/GET details.
        let (status, headers, _) = raw(&hub, "HEAD", "/tester/wire/resolve/main/missing.txt", &[], b"");
        assert_eq!((status, hdr(&headers, "x-error-code")), (404, Some("EntryNotFound")));
        assert_eq!(hdr(&headers, "x-repo-commit"), Some(raw_commit.as_str()));
        let (status, headers, body) = raw(&hub, "HEAD", "/tester/wire/resolve/main/notes/a.txt", &[], b"");
        assert_eq!((status, body.len()), (200, 0));
        assert_eq!(hdr(&headers, "etag"), Some("\"ce013625030ba8dba906f756967f9e9ca394464a\""));
        assert_eq!(hdr(&headers, "content-length"), Some("6"));
        let (status, headers, body) = raw(&hub, "GET", "/tester/wire/resolve/main/notes/a.txt", &[("Range", "bytes=1-3")], b"");
        assert_eq!(
            (status, body.as_slice(), hdr(&headers, "content-range")),
            (206, &b"ell"[..], Some("bytes 1-3/6"))
        );
        let (status, _, body) = raw(&hub, "GET", "/tester/wire/resolve/main/notes/a.txt", &[("Range", "bytes=-2")], b"");
        assert_eq!((status, body.as_slice()), (206, &b"o\n"[..]));
        let (status, headers, _) = raw(&hub, "GET", "/tester/wire/resolve/main/notes/a.txt", &[("Range", "bytes=9-")], b"");
        assert_eq!((status, hdr(&headers, "content-range")), (416, Some("bytes */6")));
        let (status, headers, _) = raw(&hub, "GET", "/tester/nothing/resolve/main/x", &[], b"");
        assert_eq!((status, hdr(&headers, "x-error-code")), (404, Some("RepoNotFound")));

        // Tree pagination (2 per page) as hf-hub follows it, a subfolder, paths-info.
        let tmp = tempfile::tempdir().unwrap();
        let api = client(&hub, FakeHub::TOKEN, tmp.path());
        let repo = api.model("tester", "wire");
        let tree = repo.list_tree().recursive(true).send().unwrap();
        let paths: Vec<String> = tree
            .iter()
            .map(|e| match e {
                RepoTreeEntry::File { path, .. } | RepoTreeEntry::Directory { path, .. } => path.clone(),
            })
            .collect();
        assert_eq!(
            paths,
            [
                "notes",
                "weights",
                ".gitattributes",
                "notes.md",
                "notes/a.txt",
                "weights/a.bin",
                "weights/b.bin"
            ]
        );
        let pages = hub.requests().iter().filter(|r| r.path.contains("/tree/main")).count();
        assert_eq!(pages, 4);
        let sub = repo.list_tree().path_in_repo("weights").send().unwrap();
        assert_eq!(sub.len(), 2);
        let infos = repo
            .get_paths_info()
            .paths(vec!["notes.md".into(), "weights".into(), "absent".into()])
            .send()
            .unwrap();
        assert_eq!(infos.len(), 2);
        let meta = repo.get_file_metadata().filepath("weights/b.bin").send().unwrap();
        assert_eq!((meta.file_size, meta.commit_hash.as_str()), (2, raw_commit.as_str()));
        assert_eq!(api.whoami().send().unwrap().username, "tester");

        // The basic-transfer upload target hf-hub never uses (other LFS clients do): PUT the object,
        // then an lfsFile line may point at it.
        let obj = noise(3000, 7);
        let oid = super::sha256_hex(&obj);
        let (status, _, _) = raw(&hub, "PUT", &format!("/__lfs/{oid}"), &[("Authorization", auth)], &obj[..10]);
        assert_eq!(status, 400, "content must match the oid");
        let (status, _, _) = raw(&hub, "PUT", &format!("/__lfs/{oid}"), &[("Authorization", auth)], &obj);
        assert_eq!(status, 200);
        let lines = format!(
            "{}\n{}\n",
            json!({"key": "header", "value": {"summary": "lfs"}}),
            json!({"key": "lfsFile", "value": {"path": "blob.bin", "algo": "sha256", "oid": oid, "size": obj.len()}})
        );
        let (status, _, _) = raw(
            &hub,
            "POST",
            "/api/models/tester/wire/commit/main",
            &[("Authorization", auth)],
            lines.as_bytes(),
        );
        assert_eq!(status, 200);
        let (status, headers, body) = raw(&hub, "GET", "/tester/wire/resolve/main/blob.bin", &[], b"");
        assert_eq!((status, body), (200, obj.clone()));
        assert_eq!(hdr(&headers, "x-linked-etag"), Some(format!("\"{oid}\"").as_str()));
        assert_eq!(hdr(&headers, "x-xet-hash"), None);
        assert_eq!(hub.commits("tester/wire").last().unwrap().lfs_files, ["blob.bin"]);

        // Injected failures match on "METHOD target" and are consumed.
        hub.fail_next("HEAD /tester/wire/", 500, 1);
        let (status, _, _) = raw(&hub, "HEAD", "/tester/wire/resolve/main/notes.md", &[], b"");
        assert_eq!(status, 500);
        let (status, _, _) = raw(&hub, "HEAD", "/tester/wire/resolve/main/notes.md", &[], b"");
        assert_eq!(status, 200);
        assert!(hub.cas_dir.is_dir());
        eprintln!("wire_details: {:?}", t0.elapsed());
    }
}
