//! Sweeps end to end through the `moco` binary: a sweep killed with -9 and restarted redoes
//! no finished run and ends with the same runs.csv as an unbroken one; plots are written.

use crate::util::tiny_config;
use moco_harness::config::DictionaryMode;
use moco_harness::io::table::read_csv;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const TIMING: [&str; 4] = ["wall_s", "images_per_s", "device", "commit"];

fn write_sweep(dir: &Path) -> std::path::PathBuf {
    let mut base = tiny_config(DictionaryMode::Moco, 2);
    base.eval.knn_every = 0;
    std::fs::write(dir.join("base.toml"), base.to_toml()).unwrap();
    let sweep = dir.join("mini.toml");
    std::fs::write(
        &sweep,
        "base = \"base.toml\"\n[grid]\n\"moco.momentum\" = [0.0, 0.99]\n\"dictionary.size\" = [32, 64]\n",
    )
    .unwrap();
    sweep
}

fn table(path: &Path) -> Vec<Vec<(String, String)>> {
    let (_, rows) = read_csv(path).unwrap();
    rows.into_iter()
        .map(|r| r.into_iter().filter(|(k, _)| !TIMING.contains(&k.as_str())).collect())
        .collect()
}

#[test]
fn killed_sweep_restarts_without_redoing_finished_runs() {
    let bin = env!("CARGO_BIN_EXE_moco");
    let dir = tempfile::tempdir().unwrap();
    let sweep = write_sweep(dir.path());
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let o = Command::new(bin)
        .args(["sweep", sweep.to_str().unwrap(), "--no-progress", "--results", a.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("#3 dictionary.size=64 moco.momentum=0.99"),
        "plan printed: {stderr}"
    );

    let mut child = Command::new(bin)
        .args(["sweep", sweep.to_str().unwrap(), "--no-progress", "--results", b.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill once the first run is finished and the second has started.
    let t0 = Instant::now();
    let done = |d: &Path| {
        std::fs::read_dir(d)
            .map(|it| it.filter_map(|e| e.ok()).filter(|e| e.path().join("summary.json").exists()).count())
            .unwrap_or(0)
    };
    while done(&b.join("mini")) < 1 {
        assert!(t0.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let finished_before = done(&b.join("mini"));
    assert!(finished_before < 4, "sweep finished before the kill");
    let first_summary = std::fs::read_dir(b.join("mini"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("summary.json"))
        .find(|p| p.exists())
        .unwrap();
    let stamp = std::fs::metadata(&first_summary).unwrap().modified().unwrap();

    let o = Command::new(bin)
        .args(["sweep", sweep.to_str().unwrap(), "--no-progress", "--results", b.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("skipped"), "{stderr}");
    assert_eq!(
        std::fs::metadata(&first_summary).unwrap().modified().unwrap(),
        stamp,
        "a finished run was redone"
    );
    assert_eq!(table(&a.join("mini/runs.csv")), table(&b.join("mini/runs.csv")));
    for f in ["momentum.png", "momentum.svg", "curves-loss.png", "README.md"] {
        assert!(b.join("mini").join(f).exists(), "{f} missing");
    }
    let readme = std::fs::read_to_string(b.join("mini/README.md")).unwrap();
    assert!(readme.contains("| moco.momentum |") || readme.contains("moco.momentum"));
}

#[test]
fn dry_run_and_bad_sweeps() {
    let bin = env!("CARGO_BIN_EXE_moco");
    let dir = tempfile::tempdir().unwrap();
    let sweep = write_sweep(dir.path());
    let o = Command::new(bin)
        .args([
            "sweep",
            sweep.to_str().unwrap(),
            "--dry-run",
            "--results",
            dir.path().join("r").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(!dir.path().join("r").exists(), "dry run wrote results");
    assert_eq!(String::from_utf8_lossy(&o.stderr).lines().filter(|l| l.starts_with('#')).count(), 4);
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "base = \"base.toml\"\n[grid]\n\"dictionary.size\" = [32, 40]\n").unwrap();
    let o = Command::new(bin)
        .args(["sweep", bad.to_str().unwrap(), "--results", dir.path().join("r").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("point #1") && err.contains("dictionary.size=40"),
        "{err}"
    );
    assert!(!dir.path().join("r").exists(), "nothing may run when a point is invalid");
}

#[test]
fn dry_run_prints_steps_and_hours() {
    let bin = env!("CARGO_BIN_EXE_moco");
    let dir = tempfile::tempdir().unwrap();
    // An image folder of 3 images in 2 classes (plus a file the loader skips), and a dataset
    // folder without train/: its steps cannot be known.
    let folder = dir.path().join("folder");
    for (class, file) in [("a", "1.jpg"), ("a", "2.PNG"), ("a", "notes.txt"), ("b", "3.jpeg")] {
        std::fs::create_dir_all(folder.join("train").join(class)).unwrap();
        std::fs::write(folder.join("train").join(class).join(file), b"").unwrap();
    }
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let sweep = dir.path().join("cost.toml");
    std::fs::write(
        &sweep,
        format!(
            r#"
[set]
"data.synthetic_train" = 640
"train.batch_size" = 64
"model.bn_splits" = 2
"dictionary.size" = 128
"train.epochs" = 9
[[grid]]
"train.epochs" = [9, 3]
[[grid]]
"train.max_steps" = [45]
[[grid]]
"data.source" = ["image_folder"]
"data.path" = [{folder:?}, {empty:?}]
"train.batch_size" = [2]
"model.bn_splits" = [1]
"#
        ),
    )
    .unwrap();
    let run = |extra: &[&str]| {
        Command::new(bin)
            .args([
                "sweep",
                sweep.to_str().unwrap(),
                "--results",
                dir.path().join("r").to_str().unwrap(),
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let o = run(&["--dry-run", "--img-per-s", "0.8"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    let line = |prefix: &str| {
        err.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in {err}"))
    };
    // 640 images / 64 = 10 steps per epoch; 0.8 img/s: 90 steps × 64 images = 7,200 s.
    assert!(line("#0 ").ends_with("]  steps 90  2.0 h"), "{err}");
    assert!(line("#1 ").ends_with("]  steps 30  0.67 h"), "{err}");
    assert!(line("#2 ").ends_with("]  steps 45  1.0 h"), "max_steps caps the steps: {err}");
    // 3 images / batch 2 = 1 step per epoch, 9 epochs: 18 images, 22.5 s.
    assert!(line("#3 ").ends_with("]  steps 9  0.01 h"), "{err}");
    assert!(line("#4 ").ends_with("]  steps ?  ? h"), "{err}");
    assert!(line("train images: ").contains("640 (built-in dataset)"), "{err}");
    assert!(err.contains("train images: 3 (") && err.contains("2 class folders)"), "{err}");
    assert!(err.contains("train images: ? (") && err.contains("not found)"), "{err}");
    assert_eq!(
        line("total: "),
        "total: 174 steps, 3.7 h at 0.8 img/s (training only: kNN and linear evaluation not included); \
         1 of 5 runs with unknown steps not counted"
    );
    assert!(!dir.path().join("r").exists(), "dry run wrote results");
    // Without a throughput: steps only.
    let o = run(&["--dry-run"]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.lines().any(|l| l.starts_with("#0 ") && l.ends_with("]  steps 90")), "{err}");
    assert!(
        err.lines()
            .any(|l| l == "total: 174 steps; 1 of 5 runs with unknown steps not counted"),
        "{err}"
    );
    // A throughput is only for a dry run, and must be > 0.
    for bad in [vec!["--img-per-s", "100"], vec!["--dry-run", "--img-per-s", "0"]] {
        let o = run(&bad);
        assert!(!o.status.success(), "{bad:?} accepted");
        assert!(String::from_utf8_lossy(&o.stderr).contains("--img-per-s"), "{bad:?}");
    }
    assert!(!dir.path().join("r").exists(), "nothing may run");
}
