//! Sweeps: a TOML file naming a base run config and grids of overrides, expanded into
//! validated run configs before anything runs (Hydra's grid and zip sweepers).
//!
//! ```toml
//! base = "cifar10-cpu.toml"        # path relative to this file (optional: defaults)
//! name = "momentum-cpu"            # results/<name>/ (default: the file stem)
//! seeds = [0, 1]                   # shorthand for a grid over `seed`
//! [set]                            # overrides of the base for every run
//! "train.epochs" = 4
//! [grid]                           # cartesian product over any config keys
//! "moco.momentum" = [0.0, 0.9, 0.99]
//! [zip]                            # lists advancing in lock-step (equal lengths)
//! "train.lr" = [0.03, 0.06]
//! "train.batch_size" = [128, 256]
//! ```
//! Several `[[grid]]` tables form a union; each may carry its own `zip = { … }`. A top-level
//! `[zip]` combines with every grid. Points are ordered: grid tables in file order, then keys
//! sorted, the last key varying fastest, then zip, then seeds.
//!
//! [`runner`] runs the points (skipping finished runs, resuming killed ones); [`results`]
//! writes `runs.csv`, the sweep's README and the cost rows of `moco bench cost`.

pub mod results;
pub mod runner;

use crate::config::{apply_override, RunConfig, ValidRunConfig};
use std::path::{Path, PathBuf};

/// A sweep that cannot be expanded; each variant names the file and, where it applies, the key
/// and the point.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// Unreadable file.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Bad TOML or a bad top-level key.
    #[error("{path}: {message}")]
    Format {
        /// File.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A grid or zip list that is empty or not a list.
    #[error("{path}: {table}.{key:?} must be a non-empty list of values")]
    EmptyList {
        /// File.
        path: PathBuf,
        /// `grid` or `zip`.
        table: String,
        /// Key.
        key: String,
    },
    /// Zip lists of different lengths.
    #[error("{path}: zip lists have different lengths: {lengths}")]
    ZipLengths {
        /// File.
        path: PathBuf,
        /// `key=len` list.
        lengths: String,
    },
    /// A point that does not parse or validate as a run config.
    #[error("{path}: point #{index} ({point}): {message}")]
    Point {
        /// File.
        path: PathBuf,
        /// Point index.
        index: usize,
        /// `key=value …`.
        point: String,
        /// Why it is rejected (names the key).
        message: String,
    },
    /// runs.csv or a README could not be written or read.
    #[error(transparent)]
    File(#[from] crate::io::error::FileError),
}

/// One run of a sweep.
#[derive(Debug, Clone)]
pub struct SweepPoint {
    /// Position in the plan.
    pub index: usize,
    /// The swept `(key, value)` pairs of this point.
    pub assignments: Vec<(String, toml::Value)>,
    /// The validated config.
    pub config: ValidRunConfig,
    /// Directory name: index and a hash of the resolved config.
    pub run_id: String,
}

impl SweepPoint {
    /// `moco.momentum=0.99 seed=1`.
    pub fn label(&self) -> String {
        if self.assignments.is_empty() {
            return "(base)".into();
        }
        self.assignments
            .iter()
            .map(|(k, v)| format!("{k}={}", show(v)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A value as the plan and CSV print it (strings unquoted).
pub fn show(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An expanded sweep.
#[derive(Debug, Clone)]
pub struct Sweep {
    /// Name (results folder).
    pub name: String,
    /// The sweep file.
    pub path: PathBuf,
    /// Every swept key, in first-seen order (the CSV's columns).
    pub keys: Vec<String>,
    /// The points.
    pub points: Vec<SweepPoint>,
}

type Assign = Vec<(String, toml::Value)>;

fn list(path: &Path, table: &str, key: &str, v: &toml::Value) -> Result<Vec<toml::Value>, SweepError> {
    match v {
        toml::Value::Array(a) if !a.is_empty() => Ok(a.clone()),
        _ => Err(SweepError::EmptyList {
            path: path.into(),
            table: table.into(),
            key: key.into(),
        }),
    }
}

fn cartesian(path: &Path, grid: &toml::Table) -> Result<Vec<Assign>, SweepError> {
    let mut points: Vec<Assign> = vec![Vec::new()];
    for (key, v) in grid {
        if key == "zip" {
            continue;
        }
        let values = list(path, "grid", key, v)?;
        points = points
            .into_iter()
            .flat_map(|p| {
                values.iter().map(move |val| {
                    let mut q = p.clone();
                    q.push((key.clone(), val.clone()));
                    q
                })
            })
            .collect();
    }
    Ok(points)
}

fn zipped(path: &Path, zip: Option<&toml::Value>) -> Result<Vec<Assign>, SweepError> {
    let Some(z) = zip else { return Ok(vec![Vec::new()]) };
    let t = z.as_table().ok_or_else(|| SweepError::Format {
        path: path.into(),
        message: "zip must be a table of lists".into(),
    })?;
    let mut lists = Vec::new();
    for (key, v) in t {
        lists.push((key.clone(), list(path, "zip", key, v)?));
    }
    let n = lists.first().map(|l| l.1.len()).unwrap_or(0);
    if lists.iter().any(|l| l.1.len() != n) {
        let lengths = lists.iter().map(|(k, l)| format!("{k}={}", l.len())).collect::<Vec<_>>().join(", ");
        return Err(SweepError::ZipLengths {
            path: path.into(),
            lengths,
        });
    }
    if lists.is_empty() {
        return Ok(vec![Vec::new()]);
    }
    Ok((0..n)
        .map(|i| lists.iter().map(|(k, l)| (k.clone(), l[i].clone())).collect())
        .collect())
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// A [`SweepError::Format`] of the sweep file `path`.
fn format_error(path: &Path) -> impl Fn(String) -> SweepError + '_ {
    move |message| SweepError::Format {
        path: path.into(),
        message,
    }
}

/// Reject top-level keys other than base, name, seeds, set, grid and zip.
fn check_top_level_keys(doc: &toml::Table, path: &Path) -> Result<(), SweepError> {
    for key in doc.keys() {
        if !["base", "name", "seeds", "set", "grid", "zip"].contains(&key.as_str()) {
            return Err(format_error(path)(format!(
                "unknown top-level key `{key}` (expected base, name, seeds, set, grid, zip)"
            )));
        }
    }
    Ok(())
}

/// The base config table (the `base` file, or defaults) with the `[set]` overrides applied.
fn base_table(doc: &toml::Table, path: &Path) -> Result<toml::Table, SweepError> {
    let fmt = format_error(path);
    let mut base = read_base(doc, path)?;
    if let Some(set) = doc.get("set") {
        let set = set.as_table().ok_or_else(|| fmt("set must be a table of key = value".into()))?;
        for (k, v) in set {
            apply_override(&mut base, k, v.clone()).map_err(|e| fmt(e.to_string()))?;
        }
    }
    Ok(base)
}

/// The TOML table of the `base` file (relative to the sweep file), or an empty table.
fn read_base(doc: &toml::Table, path: &Path) -> Result<toml::Table, SweepError> {
    match doc.get("base") {
        Some(toml::Value::String(b)) => {
            let p = path.parent().unwrap_or(Path::new(".")).join(b);
            let t = std::fs::read_to_string(&p).map_err(|source| SweepError::Io { path: p.clone(), source })?;
            toml::from_str::<toml::Table>(&t).map_err(|e| SweepError::Format {
                path: p.clone(),
                message: e.to_string(),
            })
        }
        Some(_) => Err(format_error(path)("base must be a path string".into())),
        None => Ok(toml::Table::new()),
    }
}

/// The sweep's name: `name`, or the file stem.
fn sweep_name(doc: &toml::Table, path: &Path) -> Result<String, SweepError> {
    match doc.get("name") {
        Some(toml::Value::String(n)) if !n.is_empty() && !n.contains(['/', '\\']) => Ok(n.clone()),
        Some(_) => Err(format_error(path)("name must be a plain folder name".into())),
        None => Ok(path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "sweep".into())),
    }
}

/// The grid tables: one `[grid]`, several `[[grid]]`, or one empty grid when there is none.
fn grid_tables(doc: &toml::Table, path: &Path) -> Result<Vec<toml::Table>, SweepError> {
    let fmt = format_error(path);
    match doc.get("grid") {
        None => Ok(vec![toml::Table::new()]),
        Some(toml::Value::Table(t)) => Ok(vec![t.clone()]),
        Some(toml::Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|v| v.as_table().cloned().ok_or_else(|| fmt("[[grid]] entries must be tables".into())))
            .collect(),
        Some(_) => Err(fmt("grid must be a table or an array of tables".into())),
    }
}

/// Every point's assignments in plan order: each grid table's product, its own zip, the
/// top-level zip, then seeds.
fn expand(doc: &toml::Table, path: &Path) -> Result<Vec<Assign>, SweepError> {
    let grids = grid_tables(doc, path)?;
    let top_zip = zipped(path, doc.get("zip"))?;
    let seeds: Vec<toml::Value> = match doc.get("seeds") {
        None => vec![],
        Some(v) => list(path, "seeds", "seeds", v)?,
    };
    let mut assigns: Vec<Assign> = Vec::new();
    for g in &grids {
        let local_zip = zipped(path, g.get("zip"))?;
        for a in cartesian(path, g)? {
            for z in &local_zip {
                for tz in &top_zip {
                    let mut p = a.clone();
                    p.extend(z.iter().cloned());
                    p.extend(tz.iter().cloned());
                    assigns.extend(with_seeds(p, &seeds));
                }
            }
        }
    }
    Ok(assigns)
}

/// `p` once per seed (with `seed` appended), or `p` alone when no seeds are given.
fn with_seeds(p: Assign, seeds: &[toml::Value]) -> Vec<Assign> {
    if seeds.is_empty() {
        return vec![p];
    }
    seeds
        .iter()
        .map(|s| {
            let mut q = p.clone();
            q.push(("seed".into(), s.clone()));
            q
        })
        .collect()
}

/// Point `index`: `base` with its assignments applied, validated as a run config and given
/// its run id.
fn validate_point(path: &Path, base: &toml::Table, index: usize, assignments: Assign) -> Result<SweepPoint, SweepError> {
    let label = assignments
        .iter()
        .map(|(k, v)| format!("{k}={}", show(v)))
        .collect::<Vec<_>>()
        .join(" ");
    let bad = |message: String| SweepError::Point {
        path: path.into(),
        index,
        point: label.clone(),
        message,
    };
    let mut table = base.clone();
    for (k, v) in &assignments {
        apply_override(&mut table, k, v.clone()).map_err(|e| bad(e.to_string()))?;
    }
    let cfg = RunConfig::from_table(table, "sweep point").map_err(|e| bad(e.to_string()))?;
    let config = cfg.validate().map_err(|e| bad(e.to_string()))?;
    let run_id = format!("{index:03}-{:08x}", fnv(config.to_toml().as_bytes()) as u32);
    Ok(SweepPoint {
        index,
        assignments,
        config,
        run_id,
    })
}

impl Sweep {
    /// Read, expand and validate every point of a sweep file.
    pub fn load(path: &Path) -> Result<Self, SweepError> {
        let text = std::fs::read_to_string(path).map_err(|source| SweepError::Io { path: path.into(), source })?;
        Self::parse(&text, path)
    }

    /// Expand a sweep document; `path` locates `base` and names errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, SweepError> {
        let doc: toml::Table = toml::from_str(text).map_err(|e| format_error(path)(e.to_string()))?;
        check_top_level_keys(&doc, path)?;
        let base = base_table(&doc, path)?;
        let name = sweep_name(&doc, path)?;
        let assigns = expand(&doc, path)?;
        let mut keys: Vec<String> = Vec::new();
        let mut points = Vec::new();
        for (index, assignments) in assigns.into_iter().enumerate() {
            for (k, _) in &assignments {
                if !keys.contains(k) {
                    keys.push(k.clone());
                }
            }
            points.push(validate_point(path, &base, index, assignments)?);
        }
        Ok(Self {
            name,
            path: path.into(),
            keys,
            points,
        })
    }

    /// The plan, one line per run: `#3 moco.momentum=0.99 seed=1  [003-1a2b3c4d]`.
    pub fn plan(&self) -> String {
        self.points
            .iter()
            .map(|p| format!("#{} {}  [{}]\n", p.index, p.label(), p.run_id))
            .collect()
    }

    /// The plan with each run's cost (`moco sweep --dry-run`): first where each training-set
    /// size comes from, then one line per run with its optimizer steps and, given a training
    /// throughput in images/s (as runs.csv's `images_per_s` reports it), its hours, then the
    /// totals. A size that cannot be known without the data (a folder that is not there) shows
    /// as `?`, and the totals say how many runs they leave out.
    ///
    /// ```text
    /// train images: 126,689 (data/imagenet100/train, 100 class folders)
    /// #0 dictionary.mode=moco dictionary.size=256  [000-1a2b3c4d]  steps 237,480  5.6 h
    /// total: 237,480 steps, 5.6 h at 1500 img/s (training only: kNN and linear evaluation not included)
    /// ```
    pub fn plan_with_estimates(&self, img_per_s: Option<f64>) -> String {
        let mut counts = ImageCounts::default();
        let mut out = String::new();
        let mut lines = Vec::new();
        let (mut total_steps, mut total_s, mut unknown) = (0usize, 0f64, 0usize);
        for p in &self.points {
            let steps = counts.get(&p.config, &mut out).map(|n| planned_steps(&p.config, n));
            let cost = match steps {
                Some(s) => {
                    total_steps += s;
                    let secs = img_per_s.map(|r| (s * p.config.train.batch_size) as f64 / r);
                    total_s += secs.unwrap_or(0.0);
                    format!(
                        "steps {}{}",
                        thousands(s),
                        secs.map(|t| format!("  {}", hours(t))).unwrap_or_default()
                    )
                }
                None => {
                    unknown += 1;
                    format!("steps ?{}", if img_per_s.is_some() { "  ? h" } else { "" })
                }
            };
            lines.push(format!("#{} {}  [{}]  {cost}\n", p.index, p.label(), p.run_id));
        }
        out.extend(lines);
        let (steps, time) = if unknown == self.points.len() && unknown > 0 {
            ("?".to_string(), "? h".to_string())
        } else {
            (thousands(total_steps), hours(total_s))
        };
        out += &format!("total: {steps} steps");
        if let Some(r) = img_per_s {
            out += &format!(", {time} at {r} img/s (training only: kNN and linear evaluation not included)");
        }
        if unknown > 0 {
            out += &format!("; {unknown} of {} runs with unknown steps not counted", self.points.len());
        }
        out.push('\n');
        out
    }
}

/// Optimizer steps of a run over `images` training images, as the trainer takes them: every
/// epoch ⌊images / batch⌋ steps (the last partial batch is dropped), capped by
/// `train.max_steps`.
pub fn planned_steps(cfg: &RunConfig, images: usize) -> usize {
    let steps = cfg.train.epochs * (images / cfg.train.batch_size);
    cfg.train.max_steps.map_or(steps, |m| steps.min(m))
}

/// `12,345`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `5.6 h` (two decimals under an hour).
fn hours(secs: f64) -> String {
    let h = secs / 3600.0;
    if h < 1.0 {
        format!("{h:.2} h")
    } else {
        format!("{h:.1} h")
    }
}

/// The training-set size of each distinct dataset of a sweep, found once: `get` notes where it
/// came from (or why it is unknown) the first time it sees a dataset.
#[derive(Default)]
struct ImageCounts {
    seen: std::collections::HashMap<(&'static str, PathBuf, &'static str, usize, usize), Option<usize>>,
}

impl ImageCounts {
    fn get(&mut self, cfg: &RunConfig, notes: &mut String) -> Option<usize> {
        let d = &cfg.data;
        let key = (
            d.source.as_str(),
            d.path.clone(),
            d.pretrain_split.as_str(),
            d.train_limit,
            d.synthetic_train,
        );
        *self.seen.entry(key).or_insert_with(|| {
            let (n, how) = match train_images(cfg) {
                Ok((n, how)) => (Some(n), format!("{} ({how})", thousands(n))),
                Err(why) => (None, format!("? ({why})")),
            };
            *notes += &format!("train images: {how}\n");
            n
        })
    }
}

/// The number of images the self-supervised step of `cfg` trains on, without decoding any:
/// from the config for the built-in dataset, from file sizes for the CIFAR and STL-10 binary
/// formats, by counting `path/train/<class>/*.{jpg,jpeg,png}` for an image folder, from
/// `index.json` for a pack of shards; with `data.train_limit` applied. `Ok((images, where it came from))`, or `Err(why it is unknown)`.
pub fn train_images(cfg: &RunConfig) -> Result<(usize, String), String> {
    use crate::config::{effective_len, DataSource, PretrainSplit};
    let d = &cfg.data;
    let limit = |n: usize| effective_len(n, d.train_limit);
    let limited = if d.train_limit > 0 { ", data.train_limit applied" } else { "" };
    let size = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.len() as usize)
            .map_err(|_| format!("{} not found", p.display()))
    };
    match d.source {
        DataSource::Synthetic => Ok((limit(d.synthetic_train), format!("built-in dataset{limited}"))),
        DataSource::ImageFolder => {
            let (n, classes) = count_folder(&d.path.join("train"))?;
            Ok((
                limit(n),
                format!("{}, {classes} class folders{limited}", d.path.join("train").display()),
            ))
        }
        DataSource::CifarBin => {
            let n = if d.path.join("train.bin").exists() && !d.path.join("data_batch_1.bin").exists() {
                size(&d.path.join("train.bin"))? / (32 * 32 * 3 + 2)
            } else {
                (1..=5)
                    .map(|i| size(&d.path.join(format!("data_batch_{i}.bin"))).map(|b| b / (32 * 32 * 3 + 1)))
                    .sum::<Result<usize, String>>()?
            };
            Ok((limit(n), format!("{}, from file sizes{limited}", d.path.display())))
        }
        DataSource::Stl10 => {
            let record = crate::data::stl10::RECORD;
            let train = || size(&d.path.join("train_X.bin")).map(|b| limit(b / record));
            let unlabeled = || size(&d.path.join("unlabeled_X.bin")).map(|b| limit(b / record));
            let n = match d.pretrain_split {
                PretrainSplit::Train => train()?,
                PretrainSplit::Unlabeled => unlabeled()?,
                PretrainSplit::TrainUnlabeled => train()? + unlabeled()?,
            };
            Ok((
                n,
                format!("{} {}, from file sizes{limited}", d.path.display(), d.pretrain_split.as_str()),
            ))
        }
        DataSource::Shards => {
            let n = crate::data::shards::train_samples(&d.path).map_err(|e| e.to_string())?;
            Ok((limit(n), format!("{}, from index.json{limited}", d.path.display())))
        }
    }
}

/// Images (`.jpg`, `.jpeg`, `.png`, any case, as the ImageFolder loader reads them) in the class
/// folders of `dir`, and the number of class folders.
fn count_folder(dir: &Path) -> Result<(usize, usize), String> {
    if !dir.is_dir() {
        return Err(format!("{} not found", dir.display()));
    }
    let entries = |d: &Path| std::fs::read_dir(d).map_err(|e| format!("{}: {e}", d.display()));
    let (mut images, mut classes) = (0, 0);
    for class in entries(dir)?.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()) {
        classes += 1;
        images += entries(&class)?
            .filter_map(|e| e.ok())
            .filter(|e| {
                let ext = e.path().extension().and_then(|x| x.to_str()).map(|x| x.to_ascii_lowercase());
                matches!(ext.as_deref(), Some("jpg" | "jpeg" | "png"))
            })
            .count();
    }
    if images == 0 {
        return Err(format!("{}: no images in class folders", dir.display()));
    }
    Ok((images, classes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Sweep, SweepError> {
        Sweep::parse(text, Path::new("experiments/test.toml"))
    }

    #[test]
    fn grid_zip_seeds_and_union() {
        let s = parse(
            r#"
            seeds = [0, 1]
            [set]
            "train.batch_size" = 64
            [grid]
            "moco.momentum" = [0.9, 0.99]
            "moco.temperature" = [0.1, 0.2, 0.5]
            [zip]
            "train.lr" = [0.03, 0.06]
            "train.epochs" = [1, 2]
            "#,
        )
        .unwrap();
        assert_eq!(s.points.len(), 2 * 3 * 2 * 2);
        assert_eq!(s.name, "test");
        let p0 = &s.points[0].config;
        assert_eq!(
            (p0.moco.momentum, p0.moco.temperature, p0.train.lr, p0.train.epochs, p0.seed),
            (0.9, 0.1, 0.03, 1, 0)
        );
        assert_eq!(p0.train.batch_size, 64);
        assert_eq!(s.points[1].config.seed, 1);
        assert_eq!(s.points[2].config.train.lr, 0.06);
        assert_eq!(s.points[2].config.train.epochs, 2);
        assert_eq!(
            s.keys,
            vec!["moco.momentum", "moco.temperature", "train.epochs", "train.lr", "seed"]
        );
        // Distinct directories.
        let mut ids: Vec<_> = s.points.iter().map(|p| p.run_id.clone()).collect();
        ids.dedup();
        assert_eq!(ids.len(), s.points.len());

        let u = parse(
            r#"
            [[grid]]
            "dictionary.mode" = ["moco", "memory_bank"]
            "dictionary.size" = [1024, 2048]
            [[grid]]
            "dictionary.mode" = ["end_to_end"]
            zip = { "train.batch_size" = [128, 256], "model.bn_splits" = [4, 8] }
            "#,
        )
        .unwrap();
        assert_eq!(u.points.len(), 4 + 2);
        assert_eq!(u.points[5].config.train.batch_size, 256);
        assert!(u.plan().starts_with("#0 dictionary.mode=moco dictionary.size=1024  ["));
    }

    #[test]
    fn bad_sweeps_are_rejected_before_running() {
        let e = parse("[grid]\n\"moco.momentun\" = [0.9]\n").unwrap_err();
        assert!(matches!(e, SweepError::Point { index: 0, .. }));
        assert!(e.to_string().contains("momentun") && e.to_string().contains("test.toml"), "{e}");
        assert!(matches!(
            parse("[grid]\n\"moco.momentum\" = []\n"),
            Err(SweepError::EmptyList { .. })
        ));
        assert!(matches!(
            parse("[zip]\n\"train.lr\" = [0.1, 0.2]\n\"train.epochs\" = [1]\n"),
            Err(SweepError::ZipLengths { .. })
        ));
        let e = parse("[grid]\n\"moco.momentum\" = [0.9, 1.5]\n").unwrap_err();
        assert!(matches!(e, SweepError::Point { index: 1, .. }), "{e}");
        assert!(e.to_string().contains("moco.momentum=1.5"));
        let e = parse("[grid]\n\"train.epochs\" = [\"ten\"]\n").unwrap_err();
        assert!(matches!(e, SweepError::Point { .. }));
        assert!(matches!(parse("grids = 1\n"), Err(SweepError::Format { .. })));
        assert!(matches!(
            parse("[grid]\n\"dictionary.size\" = [1000]\n"),
            Err(SweepError::Point { .. })
        ));
    }
}
