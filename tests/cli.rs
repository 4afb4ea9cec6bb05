//! The `moco` binary: exit codes and messages for bad input, `embed` output.

use std::process::Command;

fn moco(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_moco")).args(args).output().unwrap()
}

#[test]
fn bad_config_fails_with_key_and_value() {
    let o = moco(&["config", "--set", "dictionary.size=1000"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("dictionary.size (1000)") && err.contains("batch_size (512)"), "{err}");
    let o = moco(&[
        "train",
        "--set",
        "data.source=image_folder",
        "--set",
        "data.path=/nonexistent/data",
        "--no-progress",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/data"));
}

#[test]
fn corrupt_image_is_named() {
    let dir = tempfile::tempdir().unwrap();
    for split in ["train", "test"] {
        let d = dir.path().join(split).join("cat");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("0001.jpg"), b"not a jpeg").unwrap();
    }
    let o = moco(&[
        "train",
        "--set",
        "data.source=image_folder",
        "--set",
        &format!("data.path={}", dir.path().display()),
        "--out",
        dir.path().join("run").to_str().unwrap(),
        "--no-progress",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("0001.jpg") && err.contains("cannot decode"), "{err}");
    // The failure is recorded in the run directory.
    let summary = std::fs::read_to_string(dir.path().join("run/summary.json")).unwrap();
    assert!(summary.contains("\"failed\""));
}

#[test]
fn embed_writes_features_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let cfg = crate::util::tiny_config(moco_harness::config::DictionaryMode::Moco, 1);
    let cfg_path = dir.path().join("c.toml");
    std::fs::write(&cfg_path, cfg.to_toml()).unwrap();
    assert!(
        moco(&["train", cfg_path.to_str().unwrap(), "--out", run.to_str().unwrap(), "--no-progress"])
            .status
            .success()
    );
    let out = dir.path().join("feats.safetensors");
    let o = moco(&[
        "embed",
        run.join("checkpoint.safetensors").to_str().unwrap(),
        "--data",
        "builtin",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ck = moco_harness::io::checkpoint::Checkpoint::load(&out).unwrap();
    assert_eq!(ck.tensors["features"].shape(), &[40, 32]); // test split, width 4 → 32-d
    assert_eq!(ck.tensors["labels"].shape(), &[40]);
}

#[test]
fn stl10_pretrains_on_the_unlabeled_split_and_evaluates_on_the_labelled_ones() {
    let dir = tempfile::tempdir().unwrap();
    let stl = dir.path().join("stl10_binary");
    std::fs::create_dir(&stl).unwrap();
    let images = |n: usize, seed: usize| -> Vec<u8> { (0..n * 3 * 96 * 96).map(|i| ((i * 7 + seed * 13) % 251) as u8).collect() };
    std::fs::write(stl.join("train_X.bin"), images(8, 1)).unwrap();
    std::fs::write(stl.join("train_y.bin"), [1u8, 2, 3, 4, 1, 2, 3, 4]).unwrap();
    std::fs::write(stl.join("test_X.bin"), images(4, 2)).unwrap();
    std::fs::write(stl.join("test_y.bin"), [1u8, 2, 3, 4]).unwrap();
    std::fs::write(stl.join("unlabeled_X.bin"), images(32, 3)).unwrap();
    std::fs::write(stl.join("class_names.txt"), "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n").unwrap();
    let mut cfg = crate::util::tiny_config(moco_harness::config::DictionaryMode::Moco, 1);
    cfg.data.source = moco_harness::config::DataSource::Stl10;
    cfg.data.path = stl.clone();
    cfg.train.batch_size = 8;
    cfg.dictionary.size = 16;
    cfg.eval.knn_k = 4;
    let cfg_path = dir.path().join("stl.toml");
    std::fs::write(&cfg_path, cfg.to_toml()).unwrap();
    let steps = |split: &str| -> u64 {
        let run = dir.path().join(format!("run-{}", split.replace('+', "-")));
        let o = moco(&[
            "train",
            cfg_path.to_str().unwrap(),
            "--set",
            &format!("data.pretrain_split=\"{split}\""),
            "--out",
            run.to_str().unwrap(),
            "--no-progress",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
        assert!(s["knn_top1"].as_f64().is_some(), "kNN ran on the labelled splits");
        s["steps"].as_u64().unwrap()
    };
    // 8 labelled images → 1 step of 8; 32 unlabeled → 4; both → 5.
    assert_eq!(steps("train"), 1);
    assert_eq!(steps("unlabeled"), 4);
    assert_eq!(steps("train+unlabeled"), 5);
}
