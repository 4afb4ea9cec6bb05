//! Config errors by variant, overrides, and the resolved-config round trip.

use moco_harness::config::{ConfigError, DataSource, DictionaryMode, LoadError, RunConfig};
use std::path::PathBuf;

fn err(f: impl FnOnce(&mut RunConfig)) -> ConfigError {
    let mut c = RunConfig::default();
    f(&mut c);
    c.validate().expect_err("config should be rejected")
}

#[test]
fn defaults_are_valid_and_round_trip_through_toml() {
    let c = RunConfig::default();
    let text = c.to_toml();
    assert_eq!(RunConfig::from_toml_str(&text, "resolved").unwrap(), c);
    assert!(c.validate().is_ok());
    // An empty file is the defaults.
    assert_eq!(RunConfig::from_toml_str("", "empty").unwrap(), RunConfig::default());
}

#[test]
fn each_rule_has_its_variant() {
    assert!(matches!(err(|c| c.moco.momentum = 1.5), ConfigError::Momentum(m) if m == 1.5));
    assert!(matches!(err(|c| c.moco.momentum = -0.1), ConfigError::Momentum(_)));
    assert!(matches!(err(|c| c.moco.temperature = 0.0), ConfigError::Temperature(_)));
    assert!(matches!(err(|c| c.moco.temperature = f64::NAN), ConfigError::Temperature(_)));
    assert!(matches!(
        err(|c| c.dictionary.size = 1000),
        ConfigError::QueueNotMultiple { size: 1000, batch: 512 }
    ));
    assert!(matches!(err(|c| c.train.batch_size = 1), ConfigError::BatchSize(1)));
    assert!(matches!(err(|c| c.model.bn_splits = 3), ConfigError::BnSplits { .. }));
    assert!(matches!(
        err(|c| {
            c.train.batch_size = 8;
            c.dictionary.size = 8;
            c.model.bn_splits = 8
        }),
        ConfigError::BnGroupTooSmall(1)
    ));
    assert!(matches!(
        err(|c| c.train.lr = -1.0),
        ConfigError::NotPositive { key: "train.lr", .. }
    ));
    assert!(matches!(
        err(|c| c.train.milestones = vec![160, 120]),
        ConfigError::Milestones { .. }
    ));
    assert!(matches!(
        err(|c| c.augment.crop_scale = Some([0.8, 0.2])),
        ConfigError::BadRange {
            key: "augment.crop_scale",
            ..
        }
    ));
    assert!(matches!(
        err(|c| c.augment.blur_p = Some(1.2)),
        ConfigError::NotProbability { key: "augment.blur_p", .. }
    ));
    assert!(matches!(err(|c| c.device = "tpu".into()), ConfigError::Device(_)));
    assert!(matches!(
        err(|c| {
            c.dictionary.mode = DictionaryMode::MemoryBank;
            c.dictionary.size = 4096;
            c.data.synthetic_train = 100
        }),
        ConfigError::BankTooSmall { size: 4096, images: 100 }
    ));
    assert!(matches!(
        err(|c| {
            c.dictionary.mode = DictionaryMode::MemoryBank;
            c.dictionary.bank_momentum = 1.0
        }),
        ConfigError::BankMomentum(_)
    ));
    assert!(matches!(
        err(|c| {
            c.data.source = DataSource::ImageFolder;
            c.data.path = PathBuf::from("/nonexistent/cifar")
        }),
        ConfigError::MissingDataset { .. }
    ));
    assert!(matches!(
        err(|c| c.data.source = DataSource::CifarBin),
        ConfigError::NoDatasetPath(_)
    ));
    // end_to_end ignores K, so a K that is not a multiple of the batch is fine there.
    let mut c = RunConfig::default();
    c.dictionary.mode = DictionaryMode::EndToEnd;
    c.dictionary.size = 1000;
    assert!(c.validate().is_ok());
}

#[test]
fn messages_name_key_and_value() {
    let e = err(|c| c.dictionary.size = 1000).to_string();
    assert!(e.contains("dictionary.size") && e.contains("1000") && e.contains("512"), "{e}");
    let e = err(|c| c.moco.momentum = 2.0).to_string();
    assert!(e.contains("moco.momentum") && e.contains('2'), "{e}");
}

#[test]
fn files_and_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("run.toml");
    std::fs::write(&p, "seed = 3\n[moco]\nmomentum = 0.9\n").unwrap();
    let c = RunConfig::load(
        Some(&p),
        &[
            "moco.momentum=0.999".into(),
            "dictionary.mode=end_to_end".into(),
            "train.max_steps=5".into(),
        ],
    )
    .unwrap();
    assert_eq!(c.seed, 3);
    assert_eq!(c.moco.momentum, 0.999);
    assert_eq!(c.dictionary.mode, DictionaryMode::EndToEnd);
    assert_eq!(c.train.max_steps, Some(5));
    // An integer for a float key is accepted.
    assert_eq!(RunConfig::load(Some(&p), &["moco.momentum=1".into()]).unwrap().moco.momentum, 1.0);

    // Unknown key: names the key and the file.
    std::fs::write(&p, "[moco]\nmomentun = 0.9\n").unwrap();
    let e = RunConfig::load(Some(&p), &[]).unwrap_err();
    assert!(matches!(e, LoadError::Parse { .. }));
    let msg = e.to_string();
    assert!(msg.contains("momentun") && msg.contains("run.toml"), "{msg}");
    // Unknown key through --set.
    let e = RunConfig::load(None, &["moco.nope=1".into()]).unwrap_err().to_string();
    assert!(e.contains("nope"), "{e}");
    // Wrong type.
    let e = RunConfig::load(None, &["train.epochs=\"many\"".into()]).unwrap_err().to_string();
    assert!(e.contains("epochs") || e.contains("integer"), "{e}");
    // Malformed TOML names the file.
    std::fs::write(&p, "[moco\nmomentum = ").unwrap();
    let e = RunConfig::load(Some(&p), &[]).unwrap_err().to_string();
    assert!(e.contains("run.toml"), "{e}");
    // Missing file names the path.
    let e = RunConfig::load(Some(&dir.path().join("absent.toml")), &[]).unwrap_err();
    assert!(matches!(e, LoadError::Io { .. }));
    assert!(e.to_string().contains("absent.toml"));
}

#[test]
fn shipped_experiment_configs_parse() {
    for entry in std::fs::read_dir("experiments").unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "toml") && !p.file_name().unwrap().to_string_lossy().starts_with("sweep") {
            let text = std::fs::read_to_string(&p).unwrap();
            // Sweep files have [grid]/[zip] tables; run configs must parse as RunConfig.
            if text.contains("[grid") || text.contains("[zip]") || text.contains("base =") {
                continue;
            }
            RunConfig::load(Some(&p), &[]).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
    }
}

#[test]
fn shipped_demo_sweep_expands() {
    let s = moco_harness::sweep::Sweep::load(std::path::Path::new("experiments/sweep-demo.toml")).unwrap();
    assert_eq!(s.points.len(), 5);
    assert!(s.points.iter().all(|p| p.config.train.epochs == 4 && p.config.model.width == 8));
}

/// The symmetric loss and the key-momentum schedule (issue 19): their rules, and that their
/// defaults leave the resolved config (and so every sweep's run ids) unchanged.
#[test]
fn symmetric_and_momentum_schedule_rules() {
    let sym = |c: &mut RunConfig| {
        c.moco.symmetric = true;
        c.train.batch_size = 512;
    };
    assert!(matches!(
        err(|c| {
            sym(c);
            c.dictionary.size = 1536;
        }),
        ConfigError::SymmetricQueue { size: 1536, twice: 1024 }
    ));
    assert!(matches!(
        err(|c| {
            sym(c);
            c.dictionary.mode = DictionaryMode::EndToEnd;
        }),
        ConfigError::SymmetricMode("end_to_end")
    ));
    let mut ok = RunConfig::default();
    sym(&mut ok);
    ok.dictionary.size = 4096;
    assert!(ok.validate().is_ok());
    assert!(matches!(err(|c| c.moco.momentum_final = 1.5), ConfigError::MomentumFinal(_)));
    let text = RunConfig::default().to_toml();
    assert!(!text.contains("symmetric") && !text.contains("momentum_schedule") && !text.contains("knn_at_init"));
}
