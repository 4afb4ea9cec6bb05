//! Streamed ImageFolder data: the same batches as decoded data, the `auto` decision, class
//! lists, corrupt files (an error naming the file, or a counted skip), and a streamed run.

use moco_harness::config::{AugmentConfig, AugmentPreset, DataConfig, DataSource, DecodeMode};
use moco_harness::data::augment::AugmentParams;
use moco_harness::data::loader::{epoch_order, eval_batch, make_batch, PipelineSpec};
use moco_harness::data::sample::Output;
use moco_harness::data::{self, DataError};
use std::path::{Path, PathBuf};

/// `root/{train,test}/<class>/NN.jpg`: `per_class` JPEGs of varied sizes per class (a colour
/// gradient per class, so the pixels differ), 3 classes named c0..c2 plus `extra`.
pub fn write_folder(root: &Path, per_class: usize, extra: &[&str]) {
    let classes: Vec<String> = (0..3).map(|c| format!("c{c}")).chain(extra.iter().map(|s| s.to_string())).collect();
    for split in ["train", "test"] {
        for (c, name) in classes.iter().enumerate() {
            let dir = root.join(split).join(name);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..per_class {
                let (w, h) = (40 + 7 * i as u32, 30 + 5 * ((i + c) % 4) as u32);
                let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 6) as u8, (y * 8) as u8, (40 * c + i) as u8]));
                img.save(dir.join(format!("{i:02}.jpg"))).unwrap();
            }
        }
    }
}

fn folder_config(root: &Path, decode: DecodeMode) -> DataConfig {
    DataConfig {
        source: DataSource::ImageFolder,
        path: root.to_path_buf(),
        image_size: 24,
        decode,
        ..Default::default()
    }
}

fn output(dct: bool) -> Output {
    Output {
        image_size: 24,
        mean: [0.5; 3],
        std: [0.25; 3],
        dct,
        eval_crop_fraction: 0.875,
        skip_corrupt: false,
    }
}

fn v2() -> AugmentParams {
    AugmentParams::resolve(&AugmentConfig {
        preset: AugmentPreset::V2,
        ..Default::default()
    })
}

#[test]
fn streamed_batches_equal_decoded_batches_without_dct_scaling() {
    let dir = tempfile::tempdir().unwrap();
    write_folder(dir.path(), 6, &[]);
    let streamed = data::load(&folder_config(dir.path(), DecodeMode::Stream), 0).unwrap();
    let decoded = data::load(&folder_config(dir.path(), DecodeMode::Memory), 0).unwrap();
    assert!(streamed.train.is_streamed() && !decoded.train.is_streamed());
    assert_eq!(streamed.train.images.len(), 0, "nothing decoded up front");
    assert_eq!(
        (streamed.train.len(), streamed.train.labels.clone()),
        (18, decoded.train.labels.clone())
    );
    assert!(streamed.note.as_deref().unwrap().contains("streaming 36 image files"));
    let spec = PipelineSpec::new(v2(), output(false), 2, 5);
    let order = epoch_order(18, 5, 1, true);
    let a = make_batch(&streamed.train, &order, 4, 8, 1, &spec).unwrap();
    let b = make_batch(&decoded.train, &order, 4, 8, 1, &spec).unwrap();
    assert_eq!(
        (a.views == b.views, a.indices == b.indices, a.labels == b.labels),
        (true, true, true)
    );
    assert_ne!(a.views[0], a.views[1]);
    let idx: Vec<usize> = (0..18).collect();
    assert_eq!(
        eval_batch(&streamed.test, &idx, &output(false)).unwrap(),
        eval_batch(&decoded.test, &idx, &output(false)).unwrap()
    );
}

#[test]
fn streamed_batches_with_dct_scaling_are_deterministic_and_in_range() {
    let dir = tempfile::tempdir().unwrap();
    write_folder(dir.path(), 4, &[]);
    let set = data::load(&folder_config(dir.path(), DecodeMode::Stream), 0).unwrap().train;
    let spec = PipelineSpec::new(v2(), output(true), 2, 5);
    let order = epoch_order(set.len(), 5, 0, true);
    let a = make_batch(&set, &order, 0, 6, 0, &spec).unwrap();
    let b = make_batch(&set, &order, 0, 6, 0, &spec).unwrap();
    assert_eq!(a.views, b.views);
    assert!(a.views[0].iter().all(|v| v.is_finite() && (-2.01..=2.01).contains(v)));
}

#[test]
fn auto_streams_above_the_budget_and_decodes_within_it() {
    let dir = tempfile::tempdir().unwrap();
    write_folder(dir.path(), 3, &[]);
    let mut cfg = folder_config(dir.path(), DecodeMode::Auto);
    let within = data::load(&cfg, 0).unwrap();
    assert!(!within.train.is_streamed());
    let note = within.note.unwrap();
    assert!(
        note.starts_with("decoded 18 images into memory (auto: ") && note.contains("within data.memory_budget_gb = 8"),
        "{note}"
    );
    // 18 images of about 50×35×3 bytes: a budget of 1 kB is exceeded.
    cfg.memory_budget_gb = 1e-6;
    let above = data::load(&cfg, 0).unwrap();
    assert!(above.train.is_streamed());
    assert!(above.note.unwrap().contains("above data.memory_budget_gb = 0.000001"));
}

#[test]
fn class_list_restricts_the_classes_and_names_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    write_folder(dir.path(), 2, &["n01", "n02"]);
    let list = dir.path().join("subset.txt");
    std::fs::write(&list, "# a subset\nn02\nc1   # trailing comment\n\n").unwrap();
    let mut cfg = folder_config(dir.path(), DecodeMode::Stream);
    cfg.class_list = Some(list.clone());
    let s = data::load(&cfg, 0).unwrap();
    assert_eq!(s.train.classes, ["c1", "n02"], "sorted, as ImageFolder orders classes");
    assert_eq!((s.train.len(), s.test.len()), (4, 4));
    assert!(s
        .train
        .files
        .iter()
        .all(|f| f.to_string_lossy().contains("/c1/") || f.to_string_lossy().contains("/n02/")));
    std::fs::write(&list, "c1\nn09\n").unwrap();
    let err = data::load(&cfg, 0).unwrap_err().to_string();
    assert!(err.contains("n09") && err.contains("class of data.class_list not found"), "{err}");
}

fn corrupt_one(root: &Path) -> PathBuf {
    let bad = root.join("train/c1/01.jpg");
    let bytes = std::fs::read(&bad).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() / 3]).unwrap();
    bad
}

#[test]
fn a_corrupt_streamed_file_is_an_error_naming_it_or_a_counted_skip() {
    let dir = tempfile::tempdir().unwrap();
    write_folder(dir.path(), 4, &[]);
    let bad = corrupt_one(dir.path());
    let set = data::load(&folder_config(dir.path(), DecodeMode::Stream), 0).unwrap().train;
    let order: Vec<usize> = (0..set.len()).collect();
    let spec = PipelineSpec::new(v2(), output(true), 2, 1);
    let err = make_batch(&set, &order, 0, set.len(), 0, &spec).unwrap_err();
    assert!(matches!(&err, DataError::Decode { path, .. } if path == &bad), "{err}");
    let skip = PipelineSpec::new(
        v2(),
        Output {
            skip_corrupt: true,
            ..output(true)
        },
        2,
        1,
    );
    let b = make_batch(&set, &order, 0, set.len(), 0, &skip).unwrap();
    let bad_index = set.files.iter().position(|f| f == &bad).unwrap();
    assert_eq!(skip.skipped_files(), std::slice::from_ref(&bad));
    assert_eq!(
        b.indices[bad_index],
        bad_index as u32 + 1,
        "replaced by the next sample of the order"
    );
    // Decoded up front, the same file is an error too, or left out with skip_corrupt.
    let mut cfg = folder_config(dir.path(), DecodeMode::Memory);
    assert!(data::load(&cfg, 0).unwrap_err().to_string().contains("01.jpg"));
    cfg.skip_corrupt = true;
    let s = data::load(&cfg, 0).unwrap();
    assert_eq!(s.train.len(), 11);
    assert!(s.note.unwrap().contains("skipped 1 that do not decode"));
}

/// A tiny MoCo run on the folder, streamed.
fn stream_run_config(root: &Path) -> moco_harness::config::RunConfig {
    let mut c = crate::util::tiny_config(moco_harness::config::DictionaryMode::Moco, 2);
    c.data = DataConfig {
        prefetch: 2,
        ..folder_config(root, DecodeMode::Stream)
    };
    c.data.image_size = 16;
    c.dictionary.size = 16;
    c.train.batch_size = 8;
    c.eval.knn_k = 5;
    c
}

#[test]
fn a_streamed_run_trains_fails_on_a_corrupt_file_naming_it_and_skips_it_when_asked() {
    use moco_harness::io::run_dir::{read_metrics, RunDir, RunStatus, RunSummary};
    use moco_harness::train::{train, TrainOptions};
    let dir = tempfile::tempdir().unwrap();
    write_folder(dir.path(), 6, &[]);
    let c = stream_run_config(dir.path());
    let ok = dir.path().join("ok");
    let s = train(&crate::util::valid(c.clone()), &RunDir::new(&ok), &TrainOptions::default()).unwrap();
    assert_eq!((s.status, s.epochs, s.steps), (RunStatus::Ok, 2, 4));
    assert!(s.knn_top1.is_some() && s.skipped_files.is_empty());

    let bad = corrupt_one(dir.path());
    let failed = dir.path().join("failed");
    let err = train(&crate::util::valid(c.clone()), &RunDir::new(&failed), &TrainOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("01.jpg") && msg.contains("data.skip_corrupt = true"), "{msg}");
    let summary = RunSummary::load(&RunDir::new(&failed).summary()).unwrap();
    assert_eq!(summary.status, RunStatus::Failed);

    let mut c = c;
    c.data.skip_corrupt = true;
    let skipped = dir.path().join("skipped");
    let s = train(&crate::util::valid(c), &RunDir::new(&skipped), &TrainOptions::default()).unwrap();
    assert_eq!(s.status, RunStatus::Ok);
    // Each epoch meets the file once: 2 epochs, 2 replacements (unless the order put it past
    // the last full batch, 18 images with batch 8 leave two out per epoch).
    assert!(!s.skipped_files.is_empty() && s.skipped_files.iter().all(|f| f == &bad.display().to_string()));
    assert_eq!(read_metrics(&RunDir::new(&skipped).metrics()).unwrap().len(), 2);
}
