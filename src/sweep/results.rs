//! `results/<sweep>/runs.csv`: one row per run of a sweep, with every swept key, read back
//! from the run directories (so it can be rebuilt at any time, e.g. after sharded runs).

use super::{show, Sweep};
use crate::io::atomic::write_atomic;
use crate::io::error::FileError;
use crate::io::run_dir::{RunDir, RunSummary};
use crate::io::table::Row;
use std::path::Path;

/// Fixed columns after the swept keys.
pub const COLUMNS: [&str; 13] = [
    "status",
    "mode",
    "negatives",
    "epochs",
    "steps",
    "knn_top1",
    "linear_top1",
    "knn_top1_at_init",
    "final_loss",
    "wall_s",
    "images_per_s",
    "device",
    "commit",
];

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.4}")).unwrap_or_default()
}

/// Rows for every point of the sweep (status `pending` where the run has not finished).
pub fn collect(sweep: &Sweep, dir: &Path) -> Vec<Row> {
    sweep
        .points
        .iter()
        .map(|p| {
            let mut r = Row::new();
            r.insert("run_id".into(), p.run_id.clone());
            r.insert("index".into(), p.index.to_string());
            for (k, v) in &p.assignments {
                r.insert(k.clone(), show(v));
            }
            match RunSummary::load(&RunDir::new(dir.join(&p.run_id)).summary()) {
                Ok(s) => {
                    let status = serde_json::to_value(s.status)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default();
                    r.insert("status".into(), status);
                    r.insert("mode".into(), s.mode);
                    r.insert("negatives".into(), s.negatives.to_string());
                    r.insert("epochs".into(), s.epochs.to_string());
                    r.insert("steps".into(), s.steps.to_string());
                    r.insert("knn_top1".into(), opt(s.knn_top1));
                    r.insert("linear_top1".into(), opt(s.linear_top1));
                    r.insert("knn_top1_at_init".into(), opt(s.knn_top1_at_init));
                    r.insert("final_loss".into(), opt(s.final_loss));
                    r.insert("wall_s".into(), format!("{:.1}", s.wall_s));
                    r.insert("images_per_s".into(), format!("{:.1}", s.images_per_s));
                    r.insert("device".into(), s.device);
                    r.insert("commit".into(), s.commit);
                    r.insert("message".into(), s.message.unwrap_or_default());
                }
                Err(_) => {
                    r.insert("status".into(), "pending".into());
                    r.insert("mode".into(), p.config.dictionary.mode.as_str().into());
                }
            }
            r
        })
        .collect()
}

/// Header: run_id, index, swept keys, fixed columns, message.
pub fn header(keys: &[String]) -> Vec<String> {
    let mut h = vec!["run_id".to_string(), "index".to_string()];
    h.extend(keys.iter().cloned());
    h.extend(COLUMNS.iter().map(|s| s.to_string()));
    h.push("message".into());
    h
}

/// The cost table from `cost.csv` (`moco bench cost`), when it exists.
fn cost_section(dir: &Path) -> String {
    let Ok((_, rows)) = crate::io::table::read_csv(&dir.join("cost.csv")) else {
        return String::new();
    };
    let get = |r: &Row, k: &str| r.get(k).cloned().unwrap_or_default();
    let mut s = String::from(
        "\n## Cost against K (`moco bench cost`)\n\nOne `moco bench step` process per point (random input, median of the timed \
steps; peak RSS of that process), on the sweep's model. Figures: `cost-step`, `cost-memory`.\n\n\
| mode | K (negatives) | batch | ms / step | img/s | peak RSS (MB) | threads | commit |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in &rows {
        let ms = get(r, "step_s")
            .parse::<f64>()
            .map(|v| format!("{:.0}", v * 1000.0))
            .unwrap_or_default();
        s += &format!(
            "| {} | {} | {} | {ms} | {} | {} | {} | {} |\n",
            get(r, "mode"),
            get(r, "negatives"),
            get(r, "batch"),
            get(r, "img_per_s"),
            get(r, "peak_rss_mb"),
            get(r, "threads"),
            get(r, "commit")
        );
    }
    s + "\n"
}

/// Columns of `cost.csv` (`moco bench cost`): one row per sweep point.
pub fn cost_header() -> Vec<String> {
    [
        "run_id",
        "mode",
        "negatives",
        "batch",
        "width",
        "step_s",
        "img_per_s",
        "peak_rss_mb",
        "threads",
        "commit",
    ]
    .map(String::from)
    .to_vec()
}

/// A `cost.csv` row: the point's mechanism and K (end-to-end: batch − 1) with the step's
/// median time, images/s and the process's peak memory.
pub fn cost_row(p: &super::SweepPoint, r: &crate::bench::StepReport) -> Row {
    let mut row = Row::new();
    let mut put = |k: &str, v: String| {
        row.insert(k.into(), v);
    };
    put("run_id", p.run_id.clone());
    put("mode", p.config.dictionary.mode.as_str().into());
    put("negatives", r.k.to_string());
    put("batch", r.batch.to_string());
    put("width", r.width.to_string());
    put("step_s", format!("{:.4}", r.step_s));
    put("img_per_s", format!("{:.1}", r.img_per_s));
    put("peak_rss_mb", format!("{:.0}", r.peak_rss_mb));
    put("threads", r.threads.to_string());
    put("commit", crate::io::run_dir::git_commit());
    row
}

/// The paper's numbers for comparison (ImageNet-1M, ResNet-50, linear top-1, 200 epochs).
const PAPER: &str = "Paper (He et al. 2020, ImageNet-1M, ResNet-50, linear protocol top-1, 200 epochs): \
momentum m = 0 / 0.9 / 0.99 / 0.999 / 0.9999 → fail / 55.2 / 57.8 / 59.0 / 58.9 (K = 4096, Table 1); \
MoCo 60.6 at K = 65536, memory bank 58.0 (Figure 3).";

/// How a run ended, for tables and figures: `ok`, or why it counts as the paper's "fail":
/// a non-finite loss (`diverged`), an error (`failed`), or a finished run whose final kNN
/// top-1 is below the kNN top-1 of its own random initialisation (`collapsed`: the features
/// got worse than random, as the paper's m = 0 row; only known when the sweep measured kNN at
/// init).
pub fn outcome(r: &Row) -> &'static str {
    let f = |k: &str| r.get(k).and_then(|v| v.parse::<f64>().ok());
    match r.get("status").map(String::as_str) {
        Some("ok") => match (f("knn_top1"), f("knn_top1_at_init")) {
            (Some(end), Some(init)) if end < init => "collapsed",
            _ => "ok",
        },
        Some("diverged") => "diverged",
        Some("failed") => "failed",
        _ => "pending",
    }
}

/// Marker line in a sweep README: everything after it is kept when the README is rewritten
/// (the analysis written by hand beside the generated table).
pub const NOTES_MARKER: &str = "<!-- notes: kept when this file is regenerated -->";

/// `results/<sweep>/README.md`: the sweep's table beside the paper's numbers, then the notes
/// section of the previous README (after [`NOTES_MARKER`]), if any.
pub fn write_readme(dir: &Path, name: &str, keys: &[String], rows: &[Row], command: &str) -> Result<(), FileError> {
    let path = dir.join("README.md");
    let notes = std::fs::read_to_string(&path)
        .ok()
        .and_then(|old| old.split_once(NOTES_MARKER).map(|(_, n)| n.to_string()));
    let mut s = format!(
        "# Sweep `{name}`\n\nProduced by `{command}`. Rows come from `runs.csv` (one per run; the run's own \
files are in `<run_id>/`). Figures: the PNG/SVG files beside this one, redrawn with `moco plot results/{name}`.\n\n"
    );
    let cols: Vec<&str> = keys
        .iter()
        .map(String::as_str)
        .chain([
            "outcome",
            "knn_top1",
            "linear_top1",
            "knn_top1_at_init",
            "epochs",
            "wall_s",
            "images_per_s",
            "device",
            "commit",
        ])
        .collect();
    s += &format!(
        "| {} |\n|{}|\n",
        cols.join(" | "),
        cols.iter().map(|_| "---").collect::<Vec<_>>().join("|")
    );
    for r in rows {
        s += &format!(
            "| {} |\n",
            cols.iter()
                .map(|c| if *c == "outcome" {
                    outcome(r)
                } else {
                    r.get(*c).map(String::as_str).unwrap_or("")
                })
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    s += &format!(
        "\n{PAPER}\n\nThe numbers above are this harness's, on the dataset and scale of the sweep's config \
(see each run's `config.toml`); they are comparable with the paper in their ordering, not in absolute value. \
`outcome` is `collapsed` when a run's final kNN top-1 is below its kNN top-1 at initialisation (counted as the \
paper's \"fail\"; the figures mark it so), `diverged` for a non-finite loss.\n"
    );
    s += &cost_section(dir);
    s += &format!("\n{NOTES_MARKER}");
    s += notes.as_deref().unwrap_or("\n");
    write_atomic(&path, s.as_bytes()).map_err(FileError::io(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(status: &str, end: &str, init: &str) -> Row {
        [("status", status), ("knn_top1", end), ("knn_top1_at_init", init)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn outcome_flags_runs_that_end_below_their_init() {
        assert_eq!(outcome(&row("ok", "21.6", "29.9")), "collapsed");
        assert_eq!(outcome(&row("ok", "38.2", "29.9")), "ok");
        assert_eq!(outcome(&row("ok", "38.2", "")), "ok");
        assert_eq!(outcome(&row("diverged", "", "29.9")), "diverged");
        assert_eq!(outcome(&row("pending", "", "")), "pending");
    }

    /// The hand-written notes after the marker survive a rewrite; the table is regenerated.
    #[test]
    fn readme_keeps_the_notes_section() {
        let dir = tempfile::tempdir().unwrap();
        let keys = vec!["moco.momentum".to_string()];
        let mut r = row("ok", "21.6", "29.9");
        r.insert("moco.momentum".into(), "0.9".into());
        write_readme(dir.path(), "m", &keys, std::slice::from_ref(&r), "moco sweep m.toml").unwrap();
        let first = std::fs::read_to_string(dir.path().join("README.md")).unwrap();
        assert!(first.contains("| 0.9 | collapsed | 21.6 |"), "{first}");
        std::fs::write(
            dir.path().join("README.md"),
            format!("{first}\n## What it shows\nm = 0.9 collapses.\n"),
        )
        .unwrap();
        r.insert("knn_top1".into(), "40.0".into());
        write_readme(dir.path(), "m", &keys, &[r], "moco sweep m.toml").unwrap();
        let second = std::fs::read_to_string(dir.path().join("README.md")).unwrap();
        assert!(second.contains("| 0.9 | ok | 40.0 |"), "{second}");
        assert!(second.contains("## What it shows\nm = 0.9 collapses."), "{second}");
        assert_eq!(second.matches(NOTES_MARKER).count(), 1);
    }
}
