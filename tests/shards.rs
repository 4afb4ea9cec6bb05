//! Packed shards: `moco data pack --format shards` on a tiny ImageFolder, the index and the tar
//! members read back, the training order, a short run on the shards, and the errors for a
//! broken pack.

use moco_harness::config::{DataConfig, DataSource, DecodeMode};
use moco_harness::data::loader::train_order;
use moco_harness::data::shards::index::{read_index, Index};
use moco_harness::data::shards::pack::{pack, PackOptions};
use moco_harness::data::{self, ImageSet};
use std::path::Path;

fn options(shard_bytes: u64) -> PackOptions {
    PackOptions {
        short_side: 24,
        shard_bytes,
        quality: 90,
        class_list: None,
        seed: 1,
    }
}

/// A 3-class ImageFolder of 6 images per class and split, packed into shards of about 8 KiB.
fn packed(root: &Path) -> Index {
    crate::stream::write_folder(&root.join("src"), 6, &[]);
    pack(&root.join("src"), &root.join("pack"), &options(8 << 10), &|_: usize, _: usize| {}).unwrap()
}

fn shards_config(pack: &Path) -> DataConfig {
    DataConfig {
        source: DataSource::Shards,
        path: pack.to_path_buf(),
        image_size: 16,
        shuffle_buffer: 5,
        ..Default::default()
    }
}

fn sorted<T: Ord + Clone>(v: &[T]) -> Vec<T> {
    let mut v = v.to_vec();
    v.sort();
    v
}

#[test]
fn a_pack_has_an_index_of_mixed_shards_whose_members_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let index = packed(dir.path());
    let out = dir.path().join("pack");
    assert_eq!(read_index(&out).unwrap(), index, "index.json holds what pack returned");
    assert_eq!((index.version, index.short_side, index.quality), (1, 24, 90));
    assert_eq!(index.classes, ["c0", "c1", "c2"]);
    let train = &index.splits["train"];
    assert_eq!((train.samples, index.splits["test"].samples), (18, 18));
    assert!(train.shards.len() >= 2, "8 KiB shards: {} shard(s)", train.shards.len());
    let keys: Vec<String> = train.shards.iter().flat_map(|s| s.keys.clone()).collect();
    assert_eq!(keys, (0..18).map(|i| format!("{i:09}")).collect::<Vec<_>>());
    let mut files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files[0], "index.json", "no temporary file left: {files:?}");
    assert!(files.contains(&"train-000000.tar".to_string()) && files.contains(&"test-000000.tar".to_string()));

    let splits = data::load(&shards_config(&out), 0).unwrap();
    let set = &splits.train;
    assert!(set.is_streamed() && set.images.is_empty() && set.files.is_empty());
    assert_eq!(sorted(&set.labels), [0u32, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2]);
    let by_class: Vec<u32> = sorted(&set.labels);
    assert_ne!(set.labels, by_class, "the pack shuffled the samples");
    for i in 0..set.len() {
        let jpeg = set.encoded(i).unwrap();
        let img = image::load_from_memory(&jpeg).unwrap();
        assert_eq!(img.width().min(img.height()), 24, "sample {i}: the short side resized");
        check_tar_member(set, i, &jpeg);
    }
}

/// The tar header before member `i` names `<key>.jpg` with its size, and the `.cls` member after
/// it holds the label.
fn check_tar_member(set: &ImageSet, i: usize, jpeg: &[u8]) {
    let m = &set.members[i];
    let tar = std::fs::read(&set.shards[m.shard as usize]).unwrap();
    let header = &tar[m.offset as usize - 512..m.offset as usize];
    let name = format!("{}.jpg", m.key);
    assert_eq!(&header[..name.len()], name.as_bytes());
    let size = u64::from_str_radix(std::str::from_utf8(&header[124..135]).unwrap(), 8).unwrap();
    assert_eq!((size, jpeg.len() as u64), (m.size, m.size));
    let cls = (m.offset + m.size.div_ceil(512) * 512) as usize;
    assert_eq!(&tar[cls..cls + name.len()], format!("{}.cls", m.key).as_bytes());
    let label = std::str::from_utf8(&tar[cls + 512..cls + 1024]).unwrap().trim_end_matches('\0');
    assert_eq!(label, set.labels[i].to_string());
}

#[test]
fn the_epoch_order_is_a_seeded_permutation_and_evaluation_reads_by_offset() {
    let dir = tempfile::tempdir().unwrap();
    packed(dir.path());
    let cfg = shards_config(&dir.path().join("pack"));
    let s = data::load(&cfg, 0).unwrap();
    let a = train_order(&s.train, &cfg, 4, 1);
    assert_eq!(sorted(&a), (0..18).collect::<Vec<_>>());
    assert_eq!(a, train_order(&s.train, &cfg, 4, 1));
    assert_ne!(a, train_order(&s.train, &cfg, 4, 2));
    assert_ne!(a, train_order(&s.train, &cfg, 5, 1));
    let plain = DataConfig {
        shuffle: false,
        ..cfg.clone()
    };
    assert_eq!(train_order(&s.train, &plain, 4, 1), (0..18).collect::<Vec<_>>());
    let output = moco_harness::data::sample::Output::of(&cfg);
    let idx: Vec<usize> = (0..s.test.len()).rev().collect();
    let x = moco_harness::data::loader::eval_batch(&s.test, &idx, &output).unwrap();
    assert_eq!(x.len(), 18 * 3 * 16 * 16);
    assert!(x.iter().all(|v| v.is_finite()));
}

#[test]
fn a_short_run_trains_on_the_shards() {
    use moco_harness::io::run_dir::{RunDir, RunStatus};
    use moco_harness::train::{train, TrainOptions};
    let dir = tempfile::tempdir().unwrap();
    packed(dir.path());
    let mut c = crate::util::tiny_config(moco_harness::config::DictionaryMode::Moco, 2);
    c.data = shards_config(&dir.path().join("pack"));
    c.data.prefetch = 2;
    c.dictionary.size = 16;
    c.train.batch_size = 8;
    c.eval.knn_k = 5;
    assert_eq!(moco_harness::sweep::train_images(&c).unwrap().0, 18);
    let run = dir.path().join("run");
    let s = train(&crate::util::valid(c), &RunDir::new(&run), &TrainOptions::default()).unwrap();
    assert_eq!((s.status, s.epochs, s.steps), (RunStatus::Ok, 2, 4));
    assert!(s.knn_top1.is_some());
}

#[test]
fn a_broken_pack_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    packed(dir.path());
    let out = dir.path().join("pack");
    let cfg = shards_config(&out);
    let err = |cfg: &DataConfig| data::load(cfg, 0).unwrap_err().to_string();
    let index_path = out.join("index.json");
    let text = std::fs::read_to_string(&index_path).unwrap();

    std::fs::write(&index_path, text.replacen("\"version\":1", "\"version\":7", 1)).unwrap();
    let e = err(&cfg);
    assert!(e.contains("index.json") && e.contains("unknown version 7"), "{e}");

    std::fs::write(&index_path, &text[..text.len() / 2]).unwrap();
    let e = err(&cfg);
    assert!(e.contains("index.json") && e.contains("not valid JSON"), "{e}");

    std::fs::remove_file(&index_path).unwrap();
    let e = err(&cfg);
    assert!(e.contains("index.json") && e.contains("not found"), "{e}");

    std::fs::write(&index_path, &text).unwrap();
    let shard = out.join("train-000001.tar");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() - 1024]).unwrap();
    let e = err(&cfg);
    assert!(e.contains("train-000001.tar") && e.contains("bytes on disk"), "{e}");

    let bad = DataConfig {
        shuffle_buffer: 0,
        ..cfg.clone()
    };
    let mut c = moco_harness::config::RunConfig {
        data: bad,
        ..Default::default()
    };
    assert!(c.clone().validate().unwrap_err().to_string().contains("data.shuffle_buffer"));
    c.data = DataConfig {
        decode: DecodeMode::Memory,
        ..cfg
    };
    assert!(c.validate().unwrap_err().to_string().contains("data.decode = \"memory\""));

    let again = pack(&dir.path().join("src"), &out, &options(1 << 20), &|_: usize, _: usize| {}).unwrap_err();
    assert!(again.to_string().contains("not an empty folder"), "{again}");
}

#[test]
fn the_cli_packs_a_class_subset_into_one_shard() {
    let dir = tempfile::tempdir().unwrap();
    crate::stream::write_folder(&dir.path().join("src"), 2, &["n01"]);
    let list = dir.path().join("classes.txt");
    std::fs::write(&list, "n01\nc2\n").unwrap();
    let out = dir.path().join("pack");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_moco"))
        .args(["data", "pack", "--format", "shards", "--short-side", "20", "--no-progress"])
        .arg("--data")
        .arg(dir.path().join("src"))
        .arg("--out")
        .arg(&out)
        .arg("--class-list")
        .arg(&list)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("train: 4 samples (train/) in 1 shards"), "{stdout}");
    let index = read_index(&out).unwrap();
    assert_eq!(
        (index.classes.clone(), index.short_side),
        (vec!["c2".to_string(), "n01".into()], 20)
    );
}

/// `data.class_list` with shards selects nothing: it must name exactly the pack's classes (a
/// recipe's list runs on a pack made with the same list), else the error names the index.
#[test]
fn a_class_list_must_name_the_packs_classes() {
    let dir = tempfile::tempdir().unwrap();
    packed(dir.path());
    let out = dir.path().join("pack");
    let same = dir.path().join("same.txt");
    std::fs::write(&same, "# the three\nc2\nc0\nc1\n").unwrap();
    let mut cfg = shards_config(&out);
    cfg.class_list = Some(same);
    assert_eq!(data::load(&cfg, 0).unwrap().train.len(), 18);
    let fewer = dir.path().join("fewer.txt");
    std::fs::write(&fewer, "c0\nc1\n").unwrap();
    cfg.class_list = Some(fewer);
    let err = data::load(&cfg, 0).unwrap_err().to_string();
    assert!(
        err.contains("index.json") && err.contains("\"c2\"") && err.contains("holds 3 classes"),
        "{err}"
    );
}
