//! The files of a published encoder, made from a run directory without any network:
//!
//! ```text
//! model.safetensors   the query encoder: torchvision tensor names (conv1.weight, layer1.0.bn1.*,
//!                     fc.0.weight …), no prefix; __metadata__: format = "pt", config (TOML),
//!                     epoch, step, commit, metrics (JSON), moco_export = "encoder_q"
//! config.json         architecture and training hyper-parameters
//! README.md           the model card (YAML front matter with model-index) and loading snippets
//! metrics.csv         the run's per-epoch metrics, as written by `moco train`
//! ```
//!
//! `io::checkpoint::Checkpoint::load_any` reads such a file back into the run-checkpoint
//! naming (`encoder_q.` prefix), so `moco eval`, `moco embed` and `--init` read both.

use super::HubError;
use crate::config::{DataSource, RunConfig, Stem, ValidRunConfig};
use crate::io::atomic::write_atomic;
use crate::io::checkpoint::{Checkpoint, EXPORT_MARK, Q_PREFIX};
use crate::io::run_dir::{read_metrics, RunDir, RunSummary};
use std::path::{Path, PathBuf};

type Result<T> = std::result::Result<T, HubError>;

/// What [`export_run`] wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    /// The folder holding the files.
    pub dir: PathBuf,
    /// File names, in upload order.
    pub files: Vec<String>,
    /// kNN top-1 (%) of the run, when known.
    pub knn_top1: Option<f64>,
    /// Linear top-1 (%) of the run, when known.
    pub linear_top1: Option<f64>,
    /// Epochs trained.
    pub epoch: String,
}

/// Options of the model card.
#[derive(Debug, Clone, Default)]
pub struct CardOptions {
    /// The repo the card will live in (`namespace/name`), used in the snippets.
    pub repo: String,
    /// Hub dataset id to credit (default: guessed from the config, e.g. `uoft-cs/cifar10`).
    pub dataset_id: Option<String>,
    /// License id (default `mit`).
    pub license: Option<String>,
}

/// Write the published files of `run_dir` into `out` (created; existing files replaced).
pub fn export_run(run_dir: &Path, out: &Path, card: &CardOptions) -> Result<Exported> {
    let rd = RunDir::new(run_dir);
    let run = read_run(&rd)?;
    let model = encoder_checkpoint(&run)?;
    std::fs::create_dir_all(out).map_err(HubError::io(out))?;
    model.save(&out.join("model.safetensors"))?;
    let config_json = serde_json::to_string_pretty(&config_json(&run.cfg, &run.epoch)).expect("JSON values serialize") + "\n";
    write_atomic(&out.join("config.json"), config_json.as_bytes()).map_err(HubError::io(out.join("config.json")))?;
    let exported = Exported {
        dir: out.to_path_buf(),
        files: vec![
            "model.safetensors".into(),
            "config.json".into(),
            "README.md".into(),
            "metrics.csv".into(),
        ],
        knn_top1: run.knn_top1,
        linear_top1: run.linear_top1,
        epoch: run.epoch.clone(),
    };
    let card_text = model_card(&run.cfg, run.summary.as_ref(), &exported, card);
    write_atomic(&out.join("README.md"), card_text.as_bytes()).map_err(HubError::io(out.join("README.md")))?;
    copy_metrics(&rd, out)?;
    Ok(exported)
}

/// What [`export_run`] reads from a run directory.
struct RunParts {
    /// The run checkpoint's path.
    ck_path: PathBuf,
    /// The run checkpoint.
    ck: Checkpoint,
    /// The run config stored in the checkpoint.
    cfg: ValidRunConfig,
    /// `summary.json`, when the run wrote one.
    summary: Option<RunSummary>,
    /// kNN top-1 (%): the summary's, else the last one in `metrics.csv`.
    knn_top1: Option<f64>,
    /// Linear top-1 (%) of the summary.
    linear_top1: Option<f64>,
    /// Epochs trained (`?` when the checkpoint does not say).
    epoch: String,
}

/// Load the checkpoint, config, summary and metrics of the run in `rd`.
fn read_run(rd: &RunDir) -> Result<RunParts> {
    let ck_path = rd.checkpoint();
    if !ck_path.exists() {
        return Err(HubError::Export {
            path: rd.root.clone(),
            message: "no checkpoint.safetensors (not a run directory, or the run has not finished an epoch)".into(),
        });
    }
    let ck = Checkpoint::load(&ck_path)?;
    let cfg = ck.run_config(&ck_path, &[])?;
    let summary = RunSummary::load(&rd.summary()).ok();
    let metrics = read_metrics(&rd.metrics())?;
    let knn_top1 = summary
        .as_ref()
        .and_then(|s| s.knn_top1)
        .or_else(|| metrics.iter().rev().find_map(|m| m.knn_top1));
    let linear_top1 = summary.as_ref().and_then(|s| s.linear_top1);
    let epoch = ck.metadata.get("epoch").cloned().unwrap_or_else(|| "?".into());
    Ok(RunParts {
        ck_path,
        ck,
        cfg,
        summary,
        knn_top1,
        linear_top1,
        epoch,
    })
}

/// The query encoder under torchvision names, with the published metadata.
fn encoder_checkpoint(run: &RunParts) -> Result<Checkpoint> {
    let mut model = Checkpoint::default();
    for (name, t) in &run.ck.tensors {
        if let Some(n) = name.strip_prefix(Q_PREFIX) {
            model.tensors.insert(n.to_string(), t.clone());
        }
    }
    if model.tensors.is_empty() {
        return Err(HubError::Export {
            path: run.ck_path.clone(),
            message: "no encoder_q.* tensors".into(),
        });
    }
    let summary = run.summary.as_ref();
    let metrics_json = serde_json::json!({
        "knn_top1": run.knn_top1,
        "linear_top1": run.linear_top1,
        "knn_top1_at_init": summary.and_then(|s| s.knn_top1_at_init),
        "final_loss": summary.and_then(|s| s.final_loss),
        "status": summary.map(|s| format!("{:?}", s.status).to_lowercase()),
    });
    let config_text = run.ck.metadata["config"].clone(); // present: run_config read it
    let md = &mut model.metadata;
    md.insert("format".into(), "pt".into());
    md.insert("framework".into(), "candle".into());
    md.insert("library".into(), format!("moco-harness {}", env!("CARGO_PKG_VERSION")));
    md.insert(EXPORT_MARK.into(), Q_PREFIX.trim_end_matches('.').into());
    md.insert("config".into(), config_text);
    md.insert("metrics".into(), metrics_json.to_string());
    for key in ["epoch", "step", "seed", "mode", "commit"] {
        if let Some(v) = run.ck.metadata.get(key) {
            md.insert(key.into(), v.clone());
        }
    }
    Ok(model)
}

/// Copy the run's `metrics.csv` into `out` (empty when the run has none).
fn copy_metrics(rd: &RunDir, out: &Path) -> Result<()> {
    let metrics_src = rd.metrics();
    let metrics_bytes = if metrics_src.exists() {
        std::fs::read(&metrics_src).map_err(HubError::io(&metrics_src))?
    } else {
        Vec::new()
    };
    write_atomic(&out.join("metrics.csv"), &metrics_bytes).map_err(HubError::io(out.join("metrics.csv")))
}

/// A serde enum as its config string.
fn name_of<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// `config.json`: what a user needs to rebuild the encoder, plus the training recipe.
pub fn config_json(cfg: &RunConfig, epoch: &str) -> serde_json::Value {
    serde_json::json!({
        "library": "moco-harness",
        "arch": name_of(&cfg.model.arch),
        "stem": name_of(&cfg.model.stem),
        "width": cfg.model.width,
        "head": name_of(&cfg.model.head),
        "dim": cfg.model.feature_dim,
        "mlp": name_of(&cfg.model.head) == "mlp",
        "image_size": cfg.data.image_size,
        "mean": cfg.data.mean,
        "std": cfg.data.std,
        "mode": name_of(&cfg.dictionary.mode),
        "queue_size": cfg.dictionary.size,
        "momentum": cfg.moco.momentum,
        "temperature": cfg.moco.temperature,
        "shuffle_bn": cfg.moco.shuffle_bn,
        "bn_splits": cfg.model.bn_splits,
        "augment": name_of(&cfg.augment.preset),
        "epochs": epoch.parse::<u64>().ok(),
        "batch_size": cfg.train.batch_size,
        "lr": cfg.train.lr,
        "schedule": name_of(&cfg.train.schedule),
        "weight_decay": cfg.train.weight_decay,
        "sgd_momentum": cfg.train.sgd_momentum,
        "seed": cfg.seed,
        "dataset": dataset_label(cfg).1,
    })
}

/// (Hub dataset id, human name) of the training data, guessed from the config.
fn dataset_label(cfg: &RunConfig) -> (Option<String>, String) {
    let path = cfg.data.path.to_string_lossy().to_lowercase().replace(['-', '_'], "");
    match cfg.data.source {
        DataSource::Synthetic => (None, "built-in procedural dataset (moco-harness)".into()),
        _ if path.contains("cifar100") => (Some("uoft-cs/cifar100".into()), "CIFAR-100".into()),
        _ if path.contains("cifar10") => (Some("uoft-cs/cifar10".into()), "CIFAR-10".into()),
        _ if path.contains("stl10") => (Some("tanganke/stl10".into()), "STL-10".into()),
        _ => (None, cfg.data.path.display().to_string()),
    }
}

/// YAML scalar: quoted when it could be misread.
fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

/// The model card: YAML front matter the Hub validates (`model-index` with the run's top-1),
/// then how the encoder was trained and how to load it in candle and PyTorch.
pub fn model_card(cfg: &RunConfig, summary: Option<&RunSummary>, ex: &Exported, opts: &CardOptions) -> String {
    let card = Card::new(cfg, ex, opts);
    let mut md = front_matter(&card);
    md += &card_intro(&card);
    md += &results_table(&card, summary);
    md += FILES_SECTION;
    md += &loading_snippets(&opts.repo);
    md += &pytorch_section(&card);
    md += LIMITATIONS_SECTION;
    md
}

/// What the sections of the model card share: the inputs and the names derived from them.
struct Card<'a> {
    /// The run config.
    cfg: &'a RunConfig,
    /// What the export wrote (metrics, epochs).
    ex: &'a Exported,
    /// The card's options.
    opts: &'a CardOptions,
    /// Hub dataset id to credit, if any.
    dataset_id: Option<String>,
    /// Human name of the training data.
    dataset_name: String,
    /// Architecture, as torchvision spells it.
    arch: String,
    /// Projection head kind (`linear` or `mlp`).
    head: String,
}

impl<'a> Card<'a> {
    /// Derive the shared names from the config and options.
    fn new(cfg: &'a RunConfig, ex: &'a Exported, opts: &'a CardOptions) -> Self {
        let (guessed_id, dataset_name) = dataset_label(cfg);
        Card {
            cfg,
            ex,
            opts,
            dataset_id: opts.dataset_id.clone().or(guessed_id),
            dataset_name,
            arch: name_of(&cfg.model.arch), // as torchvision spells it
            head: name_of(&cfg.model.head),
        }
    }
}

/// The card's YAML front matter: library, license, tags, dataset, `model-index`.
fn front_matter(c: &Card) -> String {
    let mut y = String::from("---\n");
    y += "library_name: candle\n";
    y += &format!("license: {}\n", c.opts.license.as_deref().unwrap_or("mit"));
    y += "tags:\n";
    for t in [
        "moco",
        "self-supervised-learning",
        "contrastive-learning",
        "resnet",
        "candle",
        "safetensors",
        "moco-harness",
    ] {
        y += &format!("- {t}\n");
    }
    if let Some(id) = &c.dataset_id {
        y += &format!("datasets:\n- {id}\n");
    }
    y += "pipeline_tag: image-feature-extraction\n";
    y += "metrics:\n- accuracy\n";
    y += &model_index(c);
    y += "---\n\n";
    y
}

/// The front matter's `model-index` with the measured top-1 values (empty when none was).
fn model_index(c: &Card) -> String {
    let mut results = Vec::new();
    if let Some(v) = c.ex.knn_top1 {
        results.push(("kNN top-1 (k=".to_string() + &c.cfg.eval.knn_k.to_string() + ")", v));
    }
    if let Some(v) = c.ex.linear_top1 {
        results.push(("Linear-probe top-1".to_string(), v));
    }
    if results.is_empty() {
        return String::new();
    }
    let name = c.opts.repo.rsplit('/').next().unwrap_or("moco").to_string();
    let mut y = String::from("model-index:\n");
    y += &format!("- name: {}\n", yaml_str(&name));
    y += "  results:\n";
    y += "  - task:\n      type: image-classification\n      name: kNN / linear probe on frozen features\n";
    y += &format!(
        "    dataset:\n      type: {}\n      name: {}\n      split: test\n",
        yaml_str(c.dataset_id.as_deref().unwrap_or("moco-harness/builtin")),
        yaml_str(&c.dataset_name)
    );
    y += "    metrics:\n";
    for (n, v) in &results {
        y += &format!(
            "    - type: accuracy\n      value: {}\n      name: {}\n",
            (v * 100.0).round() / 100.0,
            yaml_str(n)
        );
    }
    y
}

/// The card's title and the paragraph on how the encoder was trained.
fn card_intro(c: &Card) -> String {
    let cfg = c.cfg;
    let version = if c.head == "mlp" { "v2" } else { "v1" };
    let mode = name_of(&cfg.dictionary.mode);
    let mut md = format!("# MoCo {version} ({}, width {}) on {}\n\n", c.arch, cfg.model.width, c.dataset_name);
    md += &format!(
        "A query encoder f_q trained with Momentum Contrast (He et al., CVPR 2020) by \
         moco-harness {} (Rust, candle): dictionary `{mode}`, K = {}, m = {}, τ = {}, \
         {} head to {} dimensions, {} epochs of batch {} (lr {}, {} schedule, weight decay {}), \
         augmentations `{}`.\n\n",
        env!("CARGO_PKG_VERSION"),
        cfg.dictionary.size,
        cfg.moco.momentum,
        cfg.moco.temperature,
        c.head,
        cfg.model.feature_dim,
        c.ex.epoch,
        cfg.train.batch_size,
        cfg.train.lr,
        name_of(&cfg.train.schedule),
        cfg.train.weight_decay,
        name_of(&cfg.augment.preset),
    );
    md
}

/// The card's results table (accuracies, and the run summary when there is one).
fn results_table(c: &Card, summary: Option<&RunSummary>) -> String {
    let fmt_acc = |v: Option<f64>| v.map(|v| format!("{v:.2}%")).unwrap_or_else(|| "not measured".into());
    let mut md = String::from("| | |\n|---|---|\n");
    md += &format!(
        "| kNN top-1 (test split, k={}, t={}) | {} |\n",
        c.cfg.eval.knn_k,
        c.cfg.eval.knn_t,
        fmt_acc(c.ex.knn_top1)
    );
    md += &format!("| linear-probe top-1 (test split) | {} |\n", fmt_acc(c.ex.linear_top1));
    if let Some(s) = summary {
        md += &format!(
            "| kNN top-1 of the same network at initialisation | {} |\n",
            fmt_acc(s.knn_top1_at_init)
        );
        md += &format!("| status | {:?} |\n", s.status);
        md += &format!("| trained on | {} ({:.0} img/s, {:.0} s) |\n", s.device, s.images_per_s, s.wall_s);
        md += &format!("| harness commit | `{}` |\n", s.commit);
    }
    md += "\nThe full run config is in `config.json` and, as TOML, in the `config` field of \
           `model.safetensors`' metadata; per-epoch loss, kNN and throughput are in `metrics.csv`.\n\n";
    md
}

/// The card's list of the published files.
const FILES_SECTION: &str = "## Files\n\n\
    - `model.safetensors`: the query encoder with torchvision's tensor names (`conv1.weight`, \
    `layer1.0.bn1.running_mean`, …, BatchNorm `num_batches_tracked` as int64) and the projection \
    head as `fc.*`; metadata `format = \"pt\"`.\n\
    - `config.json`, `metrics.csv`, this card.\n\n";

/// The card's closing section.
const LIMITATIONS_SECTION: &str = "## Limitations\n\n\
    Self-supervised features: evaluate them with a kNN monitor or a linear probe on your data. \
    One seed; the accuracies above are those of this run on the test split named in the \
    front matter, not an average.\n";

/// The card's snippets that load `repo` with the harness and in candle.
fn loading_snippets(repo: &str) -> String {
    let mut md = String::from("## Load it with the harness\n\n```sh\n");
    md += &format!("moco pull {repo}\n");
    md += &format!("moco eval knn hf://{repo} --set data.path=…\n");
    md += &format!("moco embed hf://{repo} --data PATH --out features.safetensors\n```\n\n");
    md += "## Load it in candle\n\n```rust\n";
    md += "let vb = unsafe { candle_nn::VarBuilder::from_mmaped_safetensors(&[\"model.safetensors\"], candle_core::DType::F32, &candle_core::Device::Cpu)? };\n";
    md += "let w = vb.get((64, 3, 3, 3), \"conv1.weight\")?; // torchvision names, no prefix\n```\n\n";
    md
}

/// The card's PyTorch section: a torchvision snippet at width 64, else why there is none.
fn pytorch_section(c: &Card) -> String {
    let mut md = String::from("## Load it in PyTorch / torchvision\n\n");
    if c.cfg.model.width == 64 {
        md += &torchvision_snippet(c);
    } else {
        md += &format!(
            "This encoder is narrower than torchvision's (first stage {} channels instead of 64), so \
             `torchvision.models.{}` cannot hold it; the tensor names are torchvision's and every \
             channel count is scaled by {}/64. `bench/torch_check_export.py` in the harness repository \
             builds the matching module and loads it with `strict=True`.\n\n",
            c.cfg.model.width, c.arch, c.cfg.model.width
        );
    }
    md
}

/// The Python that rebuilds the encoder in torchvision and loads `model.safetensors` into it.
fn torchvision_snippet(c: &Card) -> String {
    let (cfg, arch) = (c.cfg, &c.arch);
    let (block_out, fc_in) = match arch.as_str() {
        "resnet50" => (2048, 2048),
        _ => (512, 512),
    };
    let mut md = String::from("```python\nimport torch, torchvision\nfrom safetensors.torch import load_file\n\n");
    md += &format!("model = torchvision.models.{arch}()\n");
    if cfg.model.stem == Stem::Cifar {
        md += "model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)  # CIFAR stem: 3x3 conv, no max-pool\n";
        md += "model.maxpool = torch.nn.Identity()\n";
    }
    if c.head == "mlp" {
        md += &format!(
            "model.fc = torch.nn.Sequential(torch.nn.Linear({fc_in}, {fc_in}), torch.nn.ReLU(), torch.nn.Linear({fc_in}, {}))  # MoCo v2 head\n",
            cfg.model.feature_dim
        );
    } else {
        md += &format!("model.fc = torch.nn.Linear({fc_in}, {})  # MoCo v1 head\n", cfg.model.feature_dim);
    }
    md += "model.load_state_dict(load_file(\"model.safetensors\"), strict=True)\n";
    md += "model.fc = torch.nn.Identity()  # backbone features, as `moco embed --features backbone`\n";
    md += "model.eval()\n";
    md += &format!(
        "# input: RGB in [0, 1], normalised with mean {:?} and std {:?}, {}x{} pixels\n```\n\n",
        cfg.data.mean, cfg.data.std, cfg.data.image_size, cfg.data.image_size
    );
    md += &format!(
        "`bench/torch_check_export.py` in the harness repository checks that these features equal \
         `moco embed`'s ({block_out}-d) on the same images.\n\n"
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunConfig;

    #[test]
    fn card_front_matter_holds_the_metrics_and_names_the_dataset() {
        let mut cfg = RunConfig::default();
        cfg.data.source = DataSource::ImageFolder;
        cfg.data.path = "../shared/data/cifar10-jpeg".into();
        let ex = Exported {
            dir: PathBuf::new(),
            files: vec![],
            knn_top1: Some(44.731),
            linear_top1: None,
            epoch: "4".into(),
        };
        let card = model_card(
            &cfg,
            None,
            &ex,
            &CardOptions {
                repo: "me/moco-r18".into(),
                ..Default::default()
            },
        );
        let front = card.split("---\n").nth(1).unwrap();
        assert!(front.contains("datasets:\n- uoft-cs/cifar10\n"), "{front}");
        assert!(front.contains("value: 44.73\n"), "{front}");
        assert!(front.contains("pipeline_tag: image-feature-extraction"));
        assert!(!front.contains("Linear-probe"), "no linear number was measured: {front}");
        assert!(card.contains("strict=True"));
    }
}
