//! `index.json`, the table of contents of a pack: the classes, and per split the shards with
//! their byte size and, per sample, the key, label, and the offset and size of its JPEG inside
//! the shard (random access without reading the tar headers).

use super::super::DataError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The value of `format` in every index.
pub const FORMAT: &str = "moco-shards";
/// The index layout this build writes and reads.
pub const VERSION: u32 = 1;
/// The index's file name inside a pack folder.
pub const INDEX: &str = "index.json";

/// A pack's `index.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Index {
    /// Always [`FORMAT`].
    pub format: String,
    /// Layout version ([`VERSION`]).
    pub version: u32,
    /// Class names; a sample's label is its position here.
    pub classes: Vec<String>,
    /// The images' short side after packing (images smaller than this were not upscaled).
    pub short_side: u32,
    /// JPEG quality of the re-encoded images.
    pub quality: u8,
    /// Seed of the one shuffle of each split's samples.
    pub seed: u64,
    /// The ImageFolder the pack was made from.
    pub source: String,
    /// The file of data.class_list that restricted the classes, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_list: Option<String>,
    /// `train`, and `test` when the source had `test/` (or `val/`).
    pub splits: std::collections::BTreeMap<String, Split>,
}

/// The shards of one split, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Split {
    /// The source folder of the split (`train`, `test` or `val`).
    pub source_split: String,
    /// Samples in all shards.
    pub samples: usize,
    /// The shards.
    pub shards: Vec<Shard>,
}

/// One tar file: members `<key>.jpg` and `<key>.cls` per sample, in sample order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shard {
    /// File name inside the pack folder.
    pub name: String,
    /// Size of the file in bytes.
    pub bytes: u64,
    /// Samples in the shard.
    pub samples: usize,
    /// Per sample: the member key (`<key>.jpg`, `<key>.cls`).
    pub keys: Vec<String>,
    /// Per sample: the class index.
    pub labels: Vec<u32>,
    /// Per sample: the offset of the JPEG's data in the file.
    pub offsets: Vec<u64>,
    /// Per sample: the JPEG's size in bytes.
    pub sizes: Vec<u64>,
}

fn layout(path: &Path, message: String) -> DataError {
    DataError::Layout {
        path: path.to_path_buf(),
        message,
    }
}

/// Read and check `dir/index.json`: the format and version, the per-sample tables, the labels,
/// and every shard's size on disk against the index.
pub fn read_index(dir: &Path) -> Result<Index, DataError> {
    let path = dir.join(INDEX);
    if !path.is_file() {
        return Err(layout(
            &path,
            "not found: data.path of data.source = \"shards\" must be a folder made by `moco data pack --format shards`".into(),
        ));
    }
    let text = std::fs::read_to_string(&path).map_err(super::super::io_err(&path))?;
    let head: serde_json::Value = serde_json::from_str(&text).map_err(|e| layout(&path, format!("not valid JSON: {e}")))?;
    if head.get("format").and_then(|v| v.as_str()) != Some(FORMAT) {
        return Err(layout(&path, format!("format is {}, expected {FORMAT:?}", head["format"])));
    }
    if head.get("version").and_then(|v| v.as_u64()) != Some(VERSION as u64) {
        return Err(layout(
            &path,
            format!("unknown version {} (this build reads version {VERSION})", head["version"]),
        ));
    }
    let index: Index = serde_json::from_value(head).map_err(|e| layout(&path, format!("bad index: {e}")))?;
    for (name, split) in &index.splits {
        check_split(dir, &path, name, split, index.classes.len())?;
    }
    Ok(index)
}

/// The per-sample tables of each shard agree in length, with `samples` and the class count,
/// and each shard file has the size the index says.
fn check_split(dir: &Path, path: &Path, name: &str, split: &Split, classes: usize) -> Result<(), DataError> {
    let mut total = 0;
    for shard in &split.shards {
        let n = shard.samples;
        let lens = [shard.keys.len(), shard.labels.len(), shard.offsets.len(), shard.sizes.len()];
        if lens.iter().any(|&l| l != n) {
            return Err(layout(
                path,
                format!("split {name}, shard {}: tables of lengths {lens:?} for {n} samples", shard.name),
            ));
        }
        if let Some(l) = shard.labels.iter().find(|&&l| l as usize >= classes) {
            return Err(layout(
                path,
                format!("split {name}, shard {}: label {l} with {classes} classes", shard.name),
            ));
        }
        let file = dir.join(&shard.name);
        let size = std::fs::metadata(&file).map_err(super::super::io_err(&file))?.len();
        if size != shard.bytes {
            return Err(layout(
                &file,
                format!(
                    "{size} bytes on disk, but {} has {} (truncated or replaced shard?)",
                    INDEX, shard.bytes
                ),
            ));
        }
        if let Some(i) = (0..n).find(|&i| shard.offsets[i] + shard.sizes[i] > size) {
            return Err(layout(&file, format!("member {}.jpg ends past the end of the file", shard.keys[i])));
        }
        total += n;
    }
    if total != split.samples {
        return Err(layout(
            path,
            format!("split {name}: {total} samples in its shards, but samples = {}", split.samples),
        ));
    }
    Ok(())
}

/// The shard files of a split, in index order.
pub fn shard_paths(dir: &Path, split: &Split) -> Vec<PathBuf> {
    split.shards.iter().map(|s| dir.join(&s.name)).collect()
}
