//! Issue 21: a run's record never lies and no command destroys what it reads. Each test is one
//! case a hostile probe found on 90b94df (where it failed), run on the `moco` binary.

use crate::util::tiny_config;
use moco_harness::config::DictionaryMode;
use moco_harness::io::checkpoint::{Checkpoint, HostTensor};
use moco_harness::io::run_dir::{read_metrics, RunDir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn moco(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moco")).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A finished one-epoch moco run (width 4, built-in data) in `root/name`; its directory.
fn trained(root: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let cfg_path = root.join("c.toml");
    std::fs::write(&cfg_path, tiny_config(DictionaryMode::Moco, 1).to_toml()).unwrap();
    let run = root.join(name);
    let mut args = vec!["train", cfg_path.to_str().unwrap(), "--out", run.to_str().unwrap(), "--no-progress"];
    args.extend_from_slice(extra);
    let o = moco(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    run
}

/// Case 1: `embed CKPT --out CKPT` used to overwrite the checkpoint with features.
#[test]
fn embed_refuses_to_overwrite_its_checkpoint() {
    let root = tempfile::tempdir().unwrap();
    let run = trained(root.path(), "run", &[]);
    let ck = run.join("checkpoint.safetensors");
    let before = std::fs::read(&ck).unwrap();
    let o = moco(&["embed", ck.to_str().unwrap(), "--data", "builtin", "--out", ck.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("refusing to write") && stderr(&o).contains("--force"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&ck).unwrap(), before, "the checkpoint is untouched");
    // Another run file of the directory is refused too.
    let o = moco(&[
        "embed",
        ck.to_str().unwrap(),
        "--data",
        "builtin",
        "--out",
        run.join("summary.json").to_str().unwrap(),
    ]);
    assert!(!o.status.success() && stderr(&o).contains("run directory"), "{}", stderr(&o));
    // And `push --export-only` into a run directory.
    let o = moco(&[
        "push",
        run.to_str().unwrap(),
        "--repo",
        "me/x",
        "--export-only",
        run.to_str().unwrap(),
    ]);
    assert!(
        !o.status.success() && stderr(&o).contains("it is a run directory"),
        "{}",
        stderr(&o)
    );
}

/// Case 2: `--resume` took any `--set` (the record then disagreed with itself), and a finished
/// run silently ignored one.
#[test]
fn resume_refuses_a_config_change_and_names_it() {
    let root = tempfile::tempdir().unwrap();
    let run = trained(root.path(), "run", &[]);
    let config_before = std::fs::read_to_string(run.join("config.toml")).unwrap();
    // Make it look killed after its checkpoint: no summary.json yet.
    std::fs::remove_file(run.join("summary.json")).unwrap();
    let o = moco(&[
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--set",
        "dictionary.mode=end_to_end",
        "--no-progress",
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("dictionary.mode = \"moco\"") && e.contains("dictionary.mode = \"end_to_end\""),
        "{e}"
    );
    assert_eq!(std::fs::read_to_string(run.join("config.toml")).unwrap(), config_before);
    assert!(!run.join("summary.json").exists(), "nothing was trained");
    // A change of where it runs is allowed (and the run then finishes).
    let o = moco(&[
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--set",
        "data.workers=1",
        "--no-progress",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // A finished run with a change is refused, not ignored.
    let o = moco(&[
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--set",
        "train.epochs=10",
        "--no-progress",
    ]);
    assert!(!o.status.success() && stderr(&o).contains("train.epochs = 1"), "{}", stderr(&o));
}

/// Case 3: `--init` was lost when a run killed before its first checkpoint was resumed.
#[test]
fn init_is_recorded_and_survives_resume() {
    let root = tempfile::tempdir().unwrap();
    let source = trained(root.path(), "source", &[]);
    let init = source.join("checkpoint.safetensors");
    let plain = trained(root.path(), "plain", &[]);
    let with_init = trained(root.path(), "init", &["--init", init.to_str().unwrap()]);
    let config = std::fs::read_to_string(with_init.join("config.toml")).unwrap();
    assert!(config.contains("init = ") && config.contains("checkpoint.safetensors"), "{config}");
    let first_loss = |dir: &Path| read_metrics(&RunDir::new(dir).metrics()).unwrap()[0].loss;
    let init_loss = first_loss(&with_init);
    assert_ne!(init_loss.to_bits(), first_loss(&plain).to_bits(), "--init changes the first epoch");
    // Killed before its first checkpoint: only config.toml was there.
    for f in ["checkpoint.safetensors", "metrics.csv", "summary.json"] {
        std::fs::remove_file(with_init.join(f)).unwrap();
    }
    let o = moco(&["train", "--resume", with_init.to_str().unwrap(), "--no-progress"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("init: "), "the init weights are loaded again: {}", stderr(&o));
    assert_eq!(first_loss(&with_init).to_bits(), init_loss.to_bits(), "same run as with --init");
}

/// Case 4: evaluation loaded part of a mismatched checkpoint, and NaN weights evaluated.
#[test]
fn evaluation_loads_strictly_and_refuses_non_finite_weights() {
    let root = tempfile::tempdir().unwrap();
    let run = trained(root.path(), "run", &[]);
    let o = moco(&["eval", "knn", run.to_str().unwrap(), "--set", "model.arch=resnet34"]);
    assert!(!o.status.success() && stderr(&o).contains("missing"), "{}", stderr(&o));
    let ck_path = run.join("checkpoint.safetensors");
    let mut ck = Checkpoint::load(&ck_path).unwrap();
    let name = "encoder_q.layer1.0.conv1.weight";
    match ck.tensors.get_mut(name).unwrap() {
        HostTensor::F32(_, v) => v[3] = f32::NAN,
        other => panic!("{other:?}"),
    }
    ck.save(&ck_path).unwrap();
    let o = moco(&["eval", "knn", run.to_str().unwrap()]);
    assert!(
        !o.status.success() && stderr(&o).contains(name) && stderr(&o).contains("non-finite"),
        "{}",
        stderr(&o)
    );
    let out = root.path().join("f.safetensors");
    let o = moco(&[
        "embed",
        ck_path.to_str().unwrap(),
        "--data",
        "builtin",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success() && !out.exists(), "{}", stderr(&o));
}

/// Case 6: two writers of one run directory both trained to the end.
#[test]
fn one_writer_per_run_directory() {
    let root = tempfile::tempdir().unwrap();
    let run = trained(root.path(), "run", &[]);
    std::fs::remove_file(run.join("summary.json")).unwrap();
    // A live process (this test) holds the lock.
    std::fs::write(run.join(".lock"), format!("{}\n", std::process::id())).unwrap();
    let o = moco(&["train", "--resume", run.to_str().unwrap(), "--no-progress"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains(&format!("process {}", std::process::id())), "{}", stderr(&o));
    assert!(!run.join("summary.json").exists(), "the refused writer wrote nothing");
    // A lock left by a process that is gone is taken over; a killed writer's temporary too.
    let gone = Command::new("true").spawn().unwrap();
    let pid = gone.id();
    let _ = gone.wait_with_output();
    std::fs::write(run.join(".lock"), format!("{pid}\n")).unwrap();
    std::fs::write(run.join(".metrics.csv.tmp12345"), b"half").unwrap();
    let o = moco(&["train", "--resume", run.to_str().unwrap(), "--no-progress"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("stale lock"), "{}", stderr(&o));
    assert!(!run.join(".lock").exists() && !run.join(".metrics.csv.tmp12345").exists());
}

/// Case 7: smaller lies — a cause printed twice, τ = inf's message, a test class missing from
/// train/ scored silently, `moco plot` on an empty runs.csv succeeding silently.
#[test]
fn small_lies_are_gone() {
    let root = tempfile::tempdir().unwrap();
    let o = moco(&["eval", "knn", root.path().join("none.safetensors").to_str().unwrap()]);
    let e = stderr(&o);
    assert!(!o.status.success() && e.matches("os error 2").count() == 1, "{e}");
    let o = moco(&["config", "--set", "moco.temperature=inf"]);
    assert!(stderr(&o).contains("must be finite and > 0, got inf"), "{}", stderr(&o));
    // ImageFolder whose test/ has a class train/ lacks.
    let data = root.path().join("data");
    let png = |p: PathBuf| {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        image::RgbImage::from_pixel(8, 8, image::Rgb([9, 99, 199])).save(&p).unwrap();
    };
    for (split, class) in [("train", "cat"), ("train", "dog"), ("test", "cat"), ("test", "emu")] {
        png(data.join(split).join(class).join("0.png"));
    }
    let run = trained(root.path(), "run", &[]);
    let o = moco(&[
        "embed",
        run.join("checkpoint.safetensors").to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        root.path().join("e.safetensors").to_str().unwrap(),
    ]);
    assert!(
        !o.status.success() && stderr(&o).contains("\"emu\" is not in train/"),
        "{}",
        stderr(&o)
    );
    let sweep = root.path().join("sweep");
    std::fs::create_dir_all(&sweep).unwrap();
    std::fs::write(sweep.join("runs.csv"), "run_id,index,status\n").unwrap();
    let o = moco(&["plot", sweep.to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("nothing to plot"), "{}", stderr(&o));
}

/// Case 7, the record's figures: wall time is cumulative over a resume, and a run that fails
/// after checkpointed epochs says how many it has, not 0.
#[test]
fn summary_figures_are_cumulative_and_survive_a_failure() {
    let root = tempfile::tempdir().unwrap();
    let run = trained(root.path(), "run", &[]);
    let ck = Checkpoint::load(&run.join("checkpoint.safetensors")).unwrap();
    let wall_before: f64 = ck.metadata["wall_s"].parse().unwrap();
    let summary =
        |dir: &Path| -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap() };
    let steps = summary(&run)["steps"].as_u64().unwrap();
    std::fs::remove_file(run.join("summary.json")).unwrap();
    let o = moco(&["train", "--resume", run.to_str().unwrap(), "--no-progress"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        summary(&run)["wall_s"].as_f64().unwrap() >= wall_before,
        "wall_s counts the first attempt"
    );
    // A resume that fails (a damaged checkpoint) keeps the epochs and steps on disk.
    std::fs::remove_file(run.join("summary.json")).unwrap();
    std::fs::write(run.join("checkpoint.safetensors"), b"damaged").unwrap();
    let o = moco(&["train", "--resume", run.to_str().unwrap(), "--no-progress"]);
    assert!(!o.status.success());
    let s = summary(&run);
    assert_eq!(s["status"], "failed");
    assert_eq!((s["epochs"].as_u64(), s["steps"].as_u64()), (Some(1), Some(steps)), "{s}");
}
