//! Figures of a sweep, drawn from CSV files alone (`runs.csv` and each run's `metrics.csv`),
//! as PNG and SVG. Text is rendered with an embedded font (DejaVu Sans Mono, `assets/fonts/`),
//! so no system font library is needed.
//!
//! - `queue.{png,svg}`: top-1 vs K on a log₂ axis, one line per mechanism, error bars over
//!   seeds (the paper's Figure 3);
//! - `momentum.{png,svg}`: top-1 vs m, diverged or collapsed runs (final kNN below init) marked "fail" (the paper's Table 1 row);
//! - `temperature.{png,svg}`: top-1 vs τ;
//! - `curves-loss.{png,svg}`, `curves-knn.{png,svg}`: loss and kNN top-1 per epoch, one line
//!   per run;
//! - `cost-step.{png,svg}`, `cost-memory.{png,svg}`: step time and peak memory vs K per
//!   mechanism, when `cost.csv` exists (`moco bench cost`).

use crate::io::error::FileError;
use crate::io::table::{read_csv, Row};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSansMono.ttf");

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// One line: `(x, y, error)` points.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend.
    pub label: String,
    /// Points sorted by x.
    pub points: Vec<(f64, f64, f64)>,
}

/// A line chart.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Title.
    pub title: String,
    /// X axis name.
    pub x_label: String,
    /// Y axis name.
    pub y_label: String,
    /// Tick labels for categorical x (x = position); None: numeric.
    pub x_ticks: Option<Vec<String>>,
    /// X values are log₂ of the shown value.
    pub log2_x: bool,
    /// Lines.
    pub series: Vec<Series>,
    /// `(x, text)` markers drawn at the bottom (e.g. "fail").
    pub marks: Vec<(f64, String)>,
}

impl Chart {
    /// One line per mechanism against K on a log₂ axis (the queue and cost figures).
    fn against_k(title: &str, y_label: &str, series: Vec<Series>) -> Self {
        Self {
            title: title.into(),
            x_label: "K (log2 scale)".into(),
            y_label: y_label.into(),
            x_ticks: None,
            log2_x: true,
            series,
            marks: vec![],
        }
    }
}

/// Why a figure could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// runs.csv (or a run's metrics.csv) could not be read.
    #[error(transparent)]
    File(#[from] FileError),
    /// plotters failed to draw or write the image.
    #[error("{path}: {message}")]
    Draw {
        /// Image file.
        path: PathBuf,
        /// plotters' message.
        message: String,
    },
}

/// The chart area type every figure draws on: numeric x and y.
type Plot<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// plotters' error type is generic over the backend; its text is kept and the caller adds the
/// file name (PlotError::Draw).
fn text<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> String {
    e.to_string()
}

/// Draw `c` onto `root`: axes, every series, the marks and the legend.
fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, c: &Chart) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(text)?;
    let f = Frame::of(c);
    let mut chart = ChartBuilder::on(root)
        .caption(&c.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(56)
        .build_cartesian_2d((f.x0 - f.xpad)..(f.x1 + f.xpad), (f.y0 - f.ypad)..(f.y1 + f.ypad))
        .map_err(text)?;
    draw_axes(&mut chart, c)?;
    for (i, s) in c.series.iter().enumerate() {
        draw_series(&mut chart, s, Palette99::pick(i).to_rgba())?;
    }
    draw_marks(&mut chart, &c.marks, f.y0 - f.ypad * 0.5)?;
    if c.series.len() > 1 || c.series.first().is_some_and(|s| !s.label.is_empty()) {
        draw_legend(&mut chart)?;
    }
    root.present().map_err(text)
}

/// The plotted extent of a chart: data bounds and the margins added around them.
struct Frame {
    /// Smallest x (points and marks).
    x0: f64,
    /// Largest x.
    x1: f64,
    /// Smallest y (error bars included).
    y0: f64,
    /// Largest y.
    y1: f64,
    /// Margin left and right of the data.
    xpad: f64,
    /// Margin below and above the data.
    ypad: f64,
}

impl Frame {
    /// The bounds of `c`'s points, error bars and marks, with margins.
    fn of(c: &Chart) -> Frame {
        let xs = c
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .chain(c.marks.iter().map(|m| m.0));
        let ys = c.series.iter().flat_map(|s| s.points.iter().flat_map(|p| [p.1 - p.2, p.1 + p.2]));
        let (x0, x1) = extent(xs);
        let (y0, y1) = extent(ys);
        Frame {
            x0,
            x1,
            y0,
            y1,
            xpad: ((x1 - x0) * 0.08).max(0.5),
            ypad: ((y1 - y0) * 0.15).max(1.0),
        }
    }
}

/// `(min, max)` of `values`, or `(0, 1)` when there are none.
fn extent(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if lo.is_finite() {
        (lo, hi)
    } else {
        (0.0, 1.0)
    }
}

/// The x tick labels: the categorical names, powers of two on a log₂ axis, else the value.
fn x_tick_formatter(c: &Chart) -> impl Fn(&f64) -> String {
    let ticks = c.x_ticks.clone();
    let log2 = c.log2_x;
    move |v: &f64| -> String {
        if let Some(t) = &ticks {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < t.len() {
                return t[i as usize].clone();
            }
            return String::new();
        }
        if log2 {
            let i = v.round();
            return if (v - i).abs() < 1e-6 {
                format!("{}", 2f64.powi(i as i32))
            } else {
                String::new()
            };
        }
        format!("{v:.2}")
    }
}

/// The mesh, axis descriptions and tick labels.
fn draw_axes<DB: DrawingBackend>(chart: &mut Plot<'_, DB>, c: &Chart) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let fmt = x_tick_formatter(c);
    let n_ticks = c.x_ticks.as_ref().map(|t| t.len() * 4 + 1).unwrap_or(10);
    chart
        .configure_mesh()
        .x_desc(&c.x_label)
        .y_desc(&c.y_label)
        .x_labels(n_ticks)
        .x_label_formatter(&fmt)
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(text)
}

/// One series in `color`: its line (with a legend entry), a dot per point and error bars.
fn draw_series<DB: DrawingBackend>(chart: &mut Plot<'_, DB>, s: &Series, color: RGBAColor) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    chart
        .draw_series(LineSeries::new(s.points.iter().map(|p| (p.0, p.1)), color.stroke_width(2)))
        .map_err(text)?
        .label(&s.label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    chart
        .draw_series(s.points.iter().map(|p| Circle::new((p.0, p.1), 4, color.filled())))
        .map_err(text)?;
    chart
        .draw_series(
            s.points
                .iter()
                .filter(|p| p.2 > 0.0)
                .map(|p| ErrorBar::new_vertical(p.0, p.1 - p.2, p.1, p.1 + p.2, color.stroke_width(1), 8)),
        )
        .map_err(text)?;
    Ok(())
}

/// Each `(x, text)` mark in red at height `y`.
fn draw_marks<DB: DrawingBackend>(chart: &mut Plot<'_, DB>, marks: &[(f64, String)], y: f64) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    for (x, label) in marks {
        chart
            .draw_series(std::iter::once(Text::new(
                label.clone(),
                (*x, y),
                ("sans-serif", 15).into_font().color(&RED),
            )))
            .map_err(text)?;
    }
    Ok(())
}

/// The legend box of the labelled series.
fn draw_legend<'a, DB: DrawingBackend + 'a>(chart: &mut Plot<'a, DB>) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(text)
}

/// Write `base.png` and `base.svg`.
pub fn render(chart: &Chart, base: &Path) -> Result<Vec<PathBuf>, PlotError> {
    register_font();
    let png = base.with_extension("png");
    let svg = base.with_extension("svg");
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |message| PlotError::Draw { path, message }
    };
    draw(&BitMapBackend::new(&png, (800, 520)).into_drawing_area(), chart).map_err(failed(&png))?;
    draw(&SVGBackend::new(&svg, (800, 520)).into_drawing_area(), chart).map_err(failed(&svg))?;
    Ok(vec![png, svg])
}

fn num(r: &Row, k: &str) -> Option<f64> {
    r.get(k).and_then(|v| v.parse().ok())
}

/// mean and (population) std.
fn mean_std(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    (m, (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt())
}

/// The accuracy column used: linear top-1 where every finished run has it, else kNN.
fn metric(rows: &[Row]) -> (&'static str, &'static str) {
    let ok: Vec<&Row> = rows.iter().filter(|r| r.get("status").is_some_and(|s| s == "ok")).collect();
    if !ok.is_empty() && ok.iter().all(|r| num(r, "linear_top1").is_some()) {
        ("linear_top1", "linear top-1 (%)")
    } else {
        ("knn_top1", "kNN top-1 (%)")
    }
}

/// Top-1 against a categorical key (values in numeric order), failures marked.
fn by_key(rows: &[Row], key: &str, title: &str, x_label: &str) -> Option<Chart> {
    let (col, y_label) = metric(rows);
    let mut values: Vec<(f64, String)> = rows
        .iter()
        .filter_map(|r| r.get(key).map(|v| (v.parse::<f64>().unwrap_or(f64::NAN), v.clone())))
        .collect();
    values.sort_by(|a, b| a.0.total_cmp(&b.0));
    values.dedup_by(|a, b| a.1 == b.1);
    if values.len() < 2 {
        return None;
    }
    let mut by_mode: BTreeMap<String, Vec<(f64, f64, f64)>> = BTreeMap::new();
    let mut marks = Vec::new();
    for (i, (_, v)) in values.iter().enumerate() {
        let at: Vec<&Row> = rows.iter().filter(|r| r.get(key) == Some(v)).collect();
        let mut per_mode: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for r in &at {
            if r.get("status").is_some_and(|s| s == "ok") {
                if let Some(y) = num(r, col) {
                    per_mode.entry(r.get("mode").cloned().unwrap_or_default()).or_default().push(y);
                }
            }
        }
        if at
            .iter()
            .any(|r| matches!(crate::sweep::results::outcome(r), "diverged" | "failed" | "collapsed"))
        {
            marks.push((i as f64, "fail".to_string()));
        }
        for (m, ys) in per_mode {
            let (mu, sd) = mean_std(&ys);
            by_mode.entry(m).or_default().push((i as f64, mu, sd));
        }
    }
    Some(Chart {
        title: title.into(),
        x_label: x_label.into(),
        y_label: y_label.into(),
        x_ticks: Some(values.into_iter().map(|v| v.1).collect()),
        log2_x: false,
        series: by_mode.into_iter().map(|(label, points)| Series { label, points }).collect(),
        marks,
    })
}

/// Figure 3: top-1 vs K (log₂), one line per mechanism, mean ± std over seeds.
fn queue_chart(rows: &[Row]) -> Option<Chart> {
    let (col, y_label) = metric(rows);
    let mut groups: BTreeMap<String, BTreeMap<u64, Vec<f64>>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.get("status").is_some_and(|s| s == "ok")) {
        if let (Some(k), Some(y)) = (num(r, "negatives"), num(r, col)) {
            groups
                .entry(r.get("mode").cloned().unwrap_or_default())
                .or_default()
                .entry(k as u64)
                .or_default()
                .push(y);
        }
    }
    let distinct: std::collections::BTreeSet<u64> = groups.values().flat_map(|g| g.keys().copied()).collect();
    if distinct.len() < 2 {
        return None;
    }
    let series = groups
        .into_iter()
        .map(|(mode, g)| Series {
            label: mode,
            points: g
                .into_iter()
                .map(|(k, ys)| {
                    let (m, s) = mean_std(&ys);
                    ((k as f64).log2(), m, s)
                })
                .collect(),
        })
        .collect();
    Some(Chart::against_k("Top-1 vs number of negatives K", y_label, series))
}

/// Training curves from each run's `metrics.csv`.
fn curves(dir: &Path, rows: &[Row], col: &str, title: &str, y_label: &str) -> Option<Chart> {
    let mut series = Vec::new();
    for r in rows {
        let Some(id) = r.get("run_id") else { continue };
        let Ok((_, m)) = read_csv(&dir.join(id).join("metrics.csv")) else {
            continue;
        };
        let pts: Vec<(f64, f64, f64)> = m
            .iter()
            .filter_map(|row| Some((num(row, "epoch")?, num(row, col).filter(|v| v.is_finite())?, 0.0)))
            .collect();
        if !pts.is_empty() {
            series.push(Series {
                label: id.clone(),
                points: pts,
            });
        }
    }
    (!series.is_empty()).then(|| Chart {
        title: title.into(),
        x_label: "epoch".into(),
        y_label: y_label.into(),
        x_ticks: None,
        log2_x: false,
        series,
        marks: vec![],
    })
}

/// Draw every figure that `results/<sweep>/runs.csv` supports; returns the files written.
pub fn plot_sweep(dir: &Path) -> Result<Vec<PathBuf>, PlotError> {
    let (header, rows) = read_csv(&dir.join("runs.csv"))?;
    let mut out = Vec::new();
    let has = |k: &str| header.iter().any(|h| h == k);
    if let Some(c) = queue_chart(&rows) {
        out.extend(render(&c, &dir.join("queue"))?);
    }
    if has("moco.momentum") {
        if let Some(c) = by_key(&rows, "moco.momentum", "Top-1 vs key-encoder momentum m", "momentum m") {
            out.extend(render(&c, &dir.join("momentum"))?);
        }
    }
    if has("moco.temperature") {
        if let Some(c) = by_key(&rows, "moco.temperature", "Top-1 vs temperature", "temperature") {
            out.extend(render(&c, &dir.join("temperature"))?);
        }
    }
    if let Some(c) = curves(dir, &rows, "loss", "Training loss", "InfoNCE loss") {
        out.extend(render(&c, &dir.join("curves-loss"))?);
    }
    if let Some(c) = curves(dir, &rows, "knn_top1", "kNN top-1 during training", "kNN top-1 (%)") {
        out.extend(render(&c, &dir.join("curves-knn"))?);
    }
    let cost = dir.join("cost.csv");
    if cost.exists() {
        let (_, cost_rows) = read_csv(&cost)?;
        let step = ("step_s", 1000.0, "Step time vs number of negatives K", "ms per step");
        let memory = ("peak_rss_mb", 1.0, "Peak memory vs number of negatives K", "peak RSS (MB)");
        for (name, (col, scale, title, y_label)) in [("cost-step", step), ("cost-memory", memory)] {
            if let Some(c) = cost_chart(&cost_rows, col, scale, title, y_label) {
                out.extend(render(&c, &dir.join(name))?);
            }
        }
    }
    Ok(out)
}

/// A `cost.csv` column (`moco bench cost`) against K, one line per mechanism (end-to-end's K
/// is its batch − 1): the cost argument of the paper's Figure 3.
fn cost_chart(rows: &[Row], col: &str, scale: f64, title: &str, y_label: &str) -> Option<Chart> {
    let mut groups: BTreeMap<String, Vec<(f64, f64, f64)>> = BTreeMap::new();
    for r in rows {
        if let (Some(k), Some(y)) = (num(r, "negatives"), num(r, col)) {
            let mode = r.get("mode").cloned().unwrap_or_default();
            groups.entry(mode).or_default().push((k.log2(), y * scale, 0.0));
        }
    }
    if groups.values().map(Vec::len).sum::<usize>() < 2 {
        return None;
    }
    let series = groups
        .into_iter()
        .map(|(label, mut points)| {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series { label, points }
        })
        .collect();
    Some(Chart::against_k(title, y_label, series))
}
