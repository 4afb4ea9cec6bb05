//! `moco push` / `moco pull` / hf:// references through the `moco` binary against the loopback
//! Hub of tests/hub_server.rs (xet uploads into a local CAS folder: the production path).

use crate::hub_server::{FakeHub, FakeHubOptions, LfsTransfer};
use crate::util::tiny_config;
use moco_harness::config::DictionaryMode;
use moco_harness::io::checkpoint::Checkpoint;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TOKEN: &str = "hf_test_SECRET_4e1f9c";

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    hub: FakeHub,
}

impl Env {
    fn new(transfer: LfsTransfer) -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let hub = FakeHub::start(FakeHubOptions {
            tokens: vec![TOKEN.to_string()],
            lfs_transfer: transfer,
            ..Default::default()
        });
        Env { _tmp: tmp, root, hub }
    }

    /// `moco ARGS` with the Hub pointed at the fake, `token` as HF_TOKEN and a cache under
    /// `cache` (relative to the temp root).
    fn moco(&self, args: &[&str], token: &str, cache: &str) -> Output {
        Command::new(env!("CARGO_BIN_EXE_moco"))
            .args(args)
            .env("HF_ENDPOINT", &self.hub.endpoint)
            .env("HF_TOKEN", token)
            .env("HF_HOME", self.root.join("hf-home"))
            .env("HF_HUB_CACHE", self.root.join(cache))
            .env("HF_HUB_DISABLE_TELEMETRY", "1")
            .env_remove("HF_TOKEN_PATH")
            .output()
            .unwrap()
    }

    /// A finished 1-epoch run on the built-in dataset.
    fn run(&self) -> PathBuf {
        let run = self.root.join("run");
        let cfg = tiny_config(DictionaryMode::Moco, 1);
        let cfg_path = self.root.join("c.toml");
        std::fs::write(&cfg_path, cfg.to_toml()).unwrap();
        let o = self.moco(
            &["train", cfg_path.to_str().unwrap(), "--out", run.to_str().unwrap(), "--no-progress"],
            TOKEN,
            "cache",
        );
        assert!(o.status.success(), "{}", text(&o));
        run
    }
}

/// The commits `moco push` made (the Hub makes an initial one when it creates a repo).
fn pushed(hub: &FakeHub, repo: &str) -> Vec<crate::hub_server::CommitRecord> {
    hub.commits(repo).into_iter().filter(|c| c.summary != "initial commit").collect()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.is_file() {
                out.push(p);
            }
        }
    }
    out
}

fn assert_no_token(outputs: &[&Output], dirs: &[&Path]) {
    for o in outputs {
        assert!(!text(o).contains(TOKEN), "the token was printed: {}", text(o));
    }
    for d in dirs {
        for f in files_under(d) {
            let bytes = std::fs::read(&f).unwrap();
            assert!(
                !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
                "the token was written into {}",
                f.display()
            );
        }
    }
}

#[test]
fn push_then_pull_gives_identical_files_and_hf_refs_load() {
    let env = Env::new(LfsTransfer::Xet);
    let run = env.run();
    let push = env.moco(
        &["push", run.to_str().unwrap(), "--repo", "tester/moco-tiny", "--tag", "epoch-1"],
        TOKEN,
        "cache",
    );
    assert!(push.status.success(), "{}", text(&push));

    // One commit (after the repo's initial .gitattributes) holding exactly the four files; the
    // safetensors went through xet.
    let commits = pushed(&env.hub, "tester/moco-tiny");
    assert_eq!(commits.len(), 1, "{commits:?}");
    let mut files = commits[0].added.clone();
    files.sort();
    assert_eq!(files, ["README.md", "config.json", "metrics.csv", "model.safetensors"]);
    assert_eq!(commits[0].lfs_files, ["model.safetensors"]);
    assert_eq!(env.hub.tags("tester/moco-tiny").get("epoch-1"), Some(&commits[0].id));
    let xet_writes = env.hub.requests().iter().filter(|r| r.path.contains("xet-write-token")).count();
    assert!(xet_writes > 0, "model.safetensors must go over xet");

    // What we exported locally is what the Hub holds, and what a pull returns.
    let export = env.root.join("export");
    let o = env.moco(
        &[
            "push",
            run.to_str().unwrap(),
            "--repo",
            "tester/moco-tiny",
            "--export-only",
            export.to_str().unwrap(),
        ],
        TOKEN,
        "cache",
    );
    assert!(o.status.success(), "{}", text(&o));
    let pull = env.moco(&["pull", "tester/moco-tiny"], TOKEN, "cache-pull");
    assert!(pull.status.success(), "{}", text(&pull));
    let snapshot = PathBuf::from(String::from_utf8_lossy(&pull.stdout).lines().next().unwrap().trim());
    for f in ["README.md", "config.json", "metrics.csv", "model.safetensors"] {
        let local = std::fs::read(export.join(f)).unwrap();
        assert_eq!(
            env.hub.file("tester/moco-tiny", "main", f).as_deref(),
            Some(&local[..]),
            "{f} on the Hub"
        );
        assert_eq!(std::fs::read(snapshot.join(f)).unwrap(), local, "{f} pulled");
    }
    // The run's own files are byte-identical too.
    assert_eq!(
        std::fs::read(snapshot.join("metrics.csv")).unwrap(),
        std::fs::read(run.join("metrics.csv")).unwrap()
    );

    // The exported encoder is the run's query encoder under torchvision names, format pt.
    let model = Checkpoint::load(&snapshot.join("model.safetensors")).unwrap();
    let ck = Checkpoint::load(&run.join("checkpoint.safetensors")).unwrap();
    assert_eq!(model.metadata["format"], "pt");
    assert!(model.tensors.contains_key("conv1.weight") && model.tensors.contains_key("fc.2.weight"));
    for (name, t) in &model.tensors {
        assert_eq!(&ck.tensors[&format!("encoder_q.{name}")], t, "{name}");
    }
    assert_eq!(
        model.tensors.len(),
        ck.tensors.keys().filter(|n| n.starts_with("encoder_q.")).count()
    );

    // hf:// (and the tag) work wherever a checkpoint is taken, with the run's numbers.
    let local = env.moco(
        &["eval", "knn", run.join("checkpoint.safetensors").to_str().unwrap()],
        TOKEN,
        "cache",
    );
    let remote = env.moco(&["eval", "knn", "hf://tester/moco-tiny@epoch-1"], TOKEN, "cache-eval");
    assert!(
        local.status.success() && remote.status.success(),
        "{}\n{}",
        text(&local),
        text(&remote)
    );
    assert_eq!(String::from_utf8_lossy(&local.stdout), String::from_utf8_lossy(&remote.stdout));
    let feats = env.root.join("feats.safetensors");
    let o = env.moco(
        &[
            "embed",
            "hf://tester/moco-tiny",
            "--data",
            "builtin",
            "--out",
            feats.to_str().unwrap(),
        ],
        TOKEN,
        "cache-eval",
    );
    assert!(o.status.success(), "{}", text(&o));

    assert_no_token(
        &[&push, &pull, &remote, &o],
        &[&run, &env.root.join("cache-pull"), &env.root.join("cache-eval")],
    );
}

#[test]
fn model_card_yaml_parses_and_holds_the_metrics() {
    let env = Env::new(LfsTransfer::Xet);
    let run = env.run();
    let export = env.root.join("export");
    let o = env.moco(
        &[
            "push",
            run.to_str().unwrap(),
            "--repo",
            "tester/card",
            "--export-only",
            export.to_str().unwrap(),
        ],
        TOKEN,
        "cache",
    );
    assert!(o.status.success(), "{}", text(&o));
    let card = std::fs::read_to_string(export.join("README.md")).unwrap();
    let front = card.strip_prefix("---\n").unwrap().split("\n---\n").next().unwrap();
    let y: serde_yaml::Value = serde_yaml::from_str(front).expect("front matter is YAML");
    assert_eq!(y["pipeline_tag"].as_str(), Some("image-feature-extraction"));
    assert_eq!(y["library_name"].as_str(), Some("candle"));
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    let knn = summary["knn_top1"].as_f64().unwrap();
    let m = &y["model-index"][0]["results"][0];
    assert_eq!(m["task"]["type"].as_str(), Some("image-classification"));
    assert_eq!(m["dataset"]["split"].as_str(), Some("test"));
    let v = m["metrics"][0]["value"].as_f64().unwrap();
    assert!((v - knn).abs() < 0.006, "card {v} vs summary {knn}");
    assert!(card.contains("strict=True") && card.contains("hf://tester/card"));
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(export.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["arch"], "resnet18");
    assert_eq!(cfg["width"], 4);
}

#[test]
fn bad_token_is_a_clear_error_and_commits_nothing() {
    let env = Env::new(LfsTransfer::Xet);
    let run = env.run();
    let bad = "hf_wrong_token_77aa";
    let o = env.moco(&["push", run.to_str().unwrap(), "--repo", "tester/nope"], bad, "cache");
    assert!(!o.status.success());
    let msg = text(&o);
    assert!(msg.contains("tester/nope") && msg.contains("HF_TOKEN"), "{msg}");
    assert!(!msg.contains(bad), "the token was printed: {msg}");
    assert!(pushed(&env.hub, "tester/nope").is_empty());
}

#[test]
fn server_errors_are_retried_then_reported() {
    let env = Env::new(LfsTransfer::Xet);
    let run = env.run();
    env.hub.fail_next("/commit/", 503, 2);
    let o = env.moco(&["push", run.to_str().unwrap(), "--repo", "tester/flaky"], TOKEN, "cache");
    assert!(o.status.success(), "two 503s are retried: {}", text(&o));
    assert_eq!(pushed(&env.hub, "tester/flaky").len(), 1);

    env.hub.fail_next("/commit/", 503, 1000);
    let o = env.moco(&["push", run.to_str().unwrap(), "--repo", "tester/down"], TOKEN, "cache");
    assert!(!o.status.success());
    let msg = text(&o);
    assert!(msg.contains("503") && msg.contains("tester/down"), "{msg}");
    assert!(pushed(&env.hub, "tester/down").is_empty());
    assert_no_token(&[&o], &[&run]);
}

#[test]
fn sweep_push_publishes_every_finished_run() {
    let env = Env::new(LfsTransfer::Xet);
    let mut base = tiny_config(DictionaryMode::Moco, 1);
    base.eval.knn_every = 0;
    std::fs::write(env.root.join("base.toml"), base.to_toml()).unwrap();
    let sweep = env.root.join("pushme.toml");
    std::fs::write(&sweep, "base = \"base.toml\"\n[grid]\n\"moco.momentum\" = [0.9, 0.99]\n").unwrap();
    let results = env.root.join("results");
    let o = env.moco(
        &[
            "sweep",
            sweep.to_str().unwrap(),
            "--no-progress",
            "--results",
            results.to_str().unwrap(),
            "--push",
            "tester/sw",
        ],
        TOKEN,
        "cache",
    );
    assert!(o.status.success(), "{}", text(&o));
    let mut run_ids: Vec<String> = std::fs::read_dir(results.join("pushme"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("summary.json").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    run_ids.sort();
    assert_eq!(run_ids.len(), 2);
    let mut repos = env.hub.repos();
    repos.sort();
    assert_eq!(repos, run_ids.iter().map(|id| format!("models/tester/sw-{id}")).collect::<Vec<_>>());
    for id in &run_ids {
        let repo = format!("tester/sw-{id}");
        assert_eq!(pushed(&env.hub, &repo).len(), 1, "{repo}");
        let card = String::from_utf8(env.hub.file(&repo, "main", "README.md").unwrap()).unwrap();
        assert!(card.contains(&format!("hf://{repo}")), "{card}");
    }
    assert_no_token(&[&o], &[&results]);
}

#[test]
fn push_to_a_new_branch_creates_it_and_leaves_main_alone() {
    let env = Env::new(LfsTransfer::Xet);
    let run = env.run();
    let o = env.moco(
        &[
            "push",
            run.to_str().unwrap(),
            "--repo",
            "tester/branchy",
            "--revision",
            "ablation-a",
            "--private",
        ],
        TOKEN,
        "cache",
    );
    assert!(o.status.success(), "{}", text(&o));
    let commits = pushed(&env.hub, "tester/branchy");
    assert_eq!(commits.len(), 1);
    assert_eq!(commits[0].revision, "ablation-a");
    assert!(env.hub.branches("tester/branchy").contains_key("ablation-a"));
    assert!(env.hub.file("tester/branchy", "main", "model.safetensors").is_none());
    assert!(env.hub.file("tester/branchy", "ablation-a", "model.safetensors").is_some());
    // hf://…@branch reads it back.
    let e = env.moco(&["eval", "knn", "hf://tester/branchy@ablation-a"], TOKEN, "cache-b");
    assert!(e.status.success(), "{}", text(&e));
}

/// Issue 21, case 5: with no token at all, a push used to reach the network and then blame
/// "the token"; a pull of a missing repo gave the push's "write access" hint.
#[test]
fn missing_token_and_read_errors_say_what_is_true() {
    let env = Env::new(LfsTransfer::Xet);
    let run = env.run();
    let before = env.hub.requests().len();
    let o = env.moco(&["push", run.to_str().unwrap(), "--repo", "tester/notoken"], "", "cache");
    assert!(!o.status.success());
    let msg = text(&o);
    assert!(msg.contains("none is set") && msg.contains("HF_TOKEN"), "{msg}");
    assert_eq!(env.hub.requests().len(), before, "no request was sent without a token");
    // A wrong token on a read: named as rejected, without a write-access hint.
    let o = env.moco(&["pull", "tester/absent"], "hf_wrong_token_77aa", "cache-pull");
    let msg = text(&o);
    assert!(!o.status.success() && !msg.contains("write access"), "{msg}");
    assert!(!msg.contains("hf_wrong_token_77aa"), "the token was printed: {msg}");
    // No token on a read of a repo that is not there: the read hint.
    let o = env.moco(&["pull", "tester/absent"], "", "cache-pull2");
    let msg = text(&o);
    assert!(!o.status.success() && !msg.contains("write access"), "{msg}");
}
