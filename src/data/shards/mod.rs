//! Packed shards for clusters: an ImageFolder re-encoded once (short side resized, JPEG) into
//! WebDataset tar files of about a gigabyte, plus `index.json` ([`index`]).
//!
//! A shard holds the members `<key>.jpg` and `<key>.cls` (the label in ASCII decimal) per
//! sample, the samples of a split shuffled once at pack time so every shard mixes classes
//! ([`pack`]). Reading (`data.source = "shards"`, `data.path` = the pack folder): training
//! takes the shards of its rank ([`order::shards_for`]) in a seeded per-epoch order and streams
//! their samples through a shuffle buffer of `data.shuffle_buffer` samples
//! ([`order::shard_epoch_order`]), so reads run through each file front to back; evaluation
//! reads the test split's members by the offsets of the index.

pub mod index;
pub mod order;
pub mod pack;
pub mod tar;

use super::{DataError, ImageSet, Member, Splits};
use crate::config::DataConfig;
use index::{read_index, shard_paths, Index};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The JPEG of member `m` of the shard file `shard`, read by offset.
pub fn read_member(shard: &Path, m: &Member) -> Result<Vec<u8>, DataError> {
    let io = super::io_err(shard);
    let mut f = std::fs::File::open(shard).map_err(io)?;
    f.seek(SeekFrom::Start(m.offset)).map_err(super::io_err(shard))?;
    let mut bytes = vec![0u8; m.size as usize];
    f.read_exact(&mut bytes).map_err(super::io_err(shard))?;
    Ok(bytes)
}

/// Split `name` of a pack as a streamed set of shard members, in index order.
pub fn split_set(dir: &Path, index: &Index, name: &str) -> Result<ImageSet, DataError> {
    let split = index.splits.get(name).ok_or_else(|| DataError::Layout {
        path: dir.join(index::INDEX),
        message: format!(
            "no split {name:?} (has {:?}; the source folder had no {name}/)",
            index.splits.keys().collect::<Vec<_>>()
        ),
    })?;
    let mut set = ImageSet {
        classes: index.classes.clone(),
        shards: shard_paths(dir, split),
        ..Default::default()
    };
    for (s, shard) in split.shards.iter().enumerate() {
        for i in 0..shard.samples {
            set.members.push(Member {
                shard: s as u32,
                key: shard.keys[i].clone(),
                offset: shard.offsets[i],
                size: shard.sizes[i],
            });
            set.labels.push(shard.labels[i]);
        }
    }
    Ok(set)
}

/// Both splits of the pack in `data.path` (`train` and `test`), checked against its index.
pub fn load(cfg: &DataConfig) -> Result<Splits, DataError> {
    let index = read_index(&cfg.path)?;
    if let Some(list) = &cfg.class_list {
        check_class_list(&cfg.path, &index.classes, list)?;
    }
    let train = split_set(&cfg.path, &index, "train")?;
    let test = split_set(&cfg.path, &index, "test")?;
    let note = format!(
        "reading {} train + {} test samples from {} + {} tar shards, decoded per sample (short side {}, JPEG quality {}, packed from {})",
        train.len(),
        test.len(),
        train.shards.len(),
        test.shards.len(),
        index.short_side,
        index.quality,
        index.source
    );
    Ok(Splits {
        train,
        test,
        note: Some(note),
    })
}

/// A pack holds the classes it was packed with: `data.class_list` with shards selects nothing,
/// it must name exactly the pack's classes (so a recipe's ImageNet-100 list runs unchanged on
/// a pack made with `--class-list` of the same file).
fn check_class_list(dir: &Path, classes: &[String], list: &Path) -> Result<(), DataError> {
    let listed = super::folder::read_class_list(list)?;
    let mut packed = classes.to_vec();
    packed.sort();
    if listed == packed {
        return Ok(());
    }
    let missing: Vec<&String> = listed.iter().filter(|c| !packed.contains(c)).take(3).collect();
    let extra: Vec<&String> = packed.iter().filter(|c| !listed.contains(c)).take(3).collect();
    Err(DataError::Layout {
        path: dir.join("index.json"),
        message: format!(
            "the pack holds {} classes, data.class_list {} names {} (listed, not packed: {missing:?}; packed, not listed: {extra:?}); pack with --class-list {} or leave data.class_list out",
            packed.len(),
            list.display(),
            listed.len(),
            list.display()
        ),
    })
}

/// Samples of the training split of the pack in `dir`, from its index (no shard is opened).
pub fn train_samples(dir: &Path) -> Result<usize, DataError> {
    let index = read_index(dir)?;
    Ok(index.splits.get("train").map(|s| s.samples).unwrap_or(0))
}
