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
