//! `moco data pack --format shards`: an ImageFolder's splits re-encoded into tar shards and an
//! index. Each split's samples are shuffled once (seeded), re-encoded in parallel a chunk at a
//! time (short side resized with an antialiasing filter, never upscaled; JPEG at the given
//! quality) and appended to the current shard until it reaches the target size. Every shard
//! and the index are written under a temporary name and renamed when complete; the index is
//! written last, so a folder without one is an unfinished pack.

use super::super::{align_classes, folder, io_err, DataError, ImageSet};
use super::index::{Index, Shard, Split, FORMAT, INDEX, VERSION};
use super::tar::{padded, TarWriter, BLOCK};
use crate::rng::{stream, Purpose};
use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

/// How to pack.
#[derive(Debug, Clone)]
pub struct PackOptions {
    /// Short side of the re-encoded images (smaller images keep their size).
    pub short_side: u32,
    /// Target size of a shard in bytes (a shard is closed before it would exceed it, and holds
    /// at least one sample).
    pub shard_bytes: u64,
    /// JPEG quality, 1 to 100.
    pub quality: u8,
    /// Only the classes of this file (as `data.class_list`).
    pub class_list: Option<PathBuf>,
    /// Seed of the one shuffle of each split.
    pub seed: u64,
}

/// Images re-encoded in parallel between two sequential appends.
const CHUNK: usize = 256;

/// Pack the ImageFolder `source` (`train/`, and `test/` or else `val/` when present) into the
/// new or empty folder `out`; `progress(done, total)` is told how many images each chunk
/// finished, and how many there are in all.
pub fn pack(source: &Path, out: &Path, opts: &PackOptions, progress: &dyn Fn(usize, usize)) -> Result<Index, DataError> {
    check_out(out)?;
    let only = opts.class_list.as_deref().map(folder::read_class_list).transpose()?;
    let train = folder::list_image_folder(&source.join("train"), only.as_deref())?;
    let mut sets = vec![("train", "train", train)];
    if let Some(name) = ["test", "val"].into_iter().find(|s| source.join(s).is_dir()) {
        let root = source.join(name);
        let mut eval = folder::list_image_folder(&root, only.as_deref())?;
        align_classes(&sets[0].2, &mut eval, &root)?;
        sets.push(("test", name, eval));
    }
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    let total = sets.iter().map(|s| s.2.len()).sum();
    let progress = |n: usize| progress(n, total);
    let mut splits = BTreeMap::new();
    for (n, (name, from, set)) in sets.iter().enumerate() {
        let mut order: Vec<usize> = (0..set.len()).collect();
        order.shuffle(&mut stream(opts.seed, Purpose::Shuffle, n as u64, 0x7061_636b));
        let split = write_split(out, name, from, set, &order, opts, &progress)?;
        splits.insert(name.to_string(), split);
    }
    let index = Index {
        format: FORMAT.into(),
        version: VERSION,
        classes: sets[0].2.classes.clone(),
        short_side: opts.short_side,
        quality: opts.quality,
        seed: opts.seed,
        source: source.display().to_string(),
        class_list: opts.class_list.as_ref().map(|p| p.display().to_string()),
        splits,
    };
    let path = out.join(INDEX);
    let json = serde_json::to_vec(&index).map_err(|e| DataError::Layout {
        path: path.clone(),
        message: e.to_string(),
    })?;
    crate::io::atomic::write_atomic(&path, &json).map_err(io_err(&path))?;
    Ok(index)
}

/// `out` must be new or an empty folder (a pack is never mixed with older files).
fn check_out(out: &Path) -> Result<(), DataError> {
    let busy = out.exists() && (!out.is_dir() || std::fs::read_dir(out).map_err(io_err(out))?.next().is_some());
    if busy {
        return Err(DataError::Layout {
            path: out.to_path_buf(),
            message: "already exists and is not an empty folder (--out takes a new folder)".into(),
        });
    }
    Ok(())
}

/// The image file `path` decoded, its short side resized to at most `short_side` (a triangle
/// filter widened by the scale: antialiased), encoded as JPEG at `quality`.
pub fn reencode(path: &Path, short_side: u32, quality: u8) -> Result<Vec<u8>, DataError> {
    let img = folder::decode(path)?;
    let (w, h) = (img.width as u32, img.height as u32);
    let rgb = image::RgbImage::from_raw(w, h, img.pixels).expect("decoded size matches its pixels");
    let short = w.min(h);
    let rgb = if short > short_side {
        let scale = |long: u32| ((long as u64 * short_side as u64 + short as u64 / 2) / short as u64).max(1) as u32;
        let (nw, nh) = if w <= h { (short_side, scale(h)) } else { (scale(w), short_side) };
        image::imageops::resize(&rgb, nw, nh, FilterType::Triangle)
    } else {
        rgb
    };
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, quality)
        .encode_image(&rgb)
        .map_err(|e| DataError::Decode {
            path: path.to_path_buf(),
            message: format!("cannot encode as JPEG: {e}"),
        })?;
    Ok(bytes)
}

/// A shard being written to `.<name>.tmp`, renamed to `<name>` when finished.
struct OpenShard {
    tmp: PathBuf,
    path: PathBuf,
    tar: TarWriter<BufWriter<File>>,
    shard: Shard,
}

impl OpenShard {
    fn create(out: &Path, name: String) -> Result<Self, DataError> {
        let tmp = out.join(format!(".{name}.tmp"));
        let file = File::create(&tmp).map_err(io_err(&tmp))?;
        Ok(Self {
            path: out.join(&name),
            tar: TarWriter::new(BufWriter::with_capacity(1 << 20, file)),
            tmp,
            shard: Shard {
                name,
                bytes: 0,
                samples: 0,
                keys: Vec::new(),
                labels: Vec::new(),
                offsets: Vec::new(),
                sizes: Vec::new(),
            },
        })
    }

    fn append(&mut self, key: String, label: u32, jpeg: &[u8]) -> Result<(), DataError> {
        let io = io_err(&self.tmp);
        let offset = self.tar.append(&format!("{key}.jpg"), jpeg).map_err(io)?;
        let io = io_err(&self.tmp);
        self.tar.append(&format!("{key}.cls"), label.to_string().as_bytes()).map_err(io)?;
        let s = &mut self.shard;
        s.samples += 1;
        s.keys.push(key);
        s.labels.push(label);
        s.offsets.push(offset);
        s.sizes.push(jpeg.len() as u64);
        Ok(())
    }

    /// End the archive, sync, rename into place.
    fn finish(self) -> Result<Shard, DataError> {
        let io = || io_err(&self.tmp);
        let (buffered, bytes) = self.tar.finish().map_err(io())?;
        let file = buffered.into_inner().map_err(|e| io()(e.into_error()))?;
        file.sync_all().map_err(io())?;
        std::fs::rename(&self.tmp, &self.path).map_err(io())?;
        Ok(Shard { bytes, ..self.shard })
    }
}

/// Write split `name` (read from the source's `from/`) in the order `order` as shards
/// `<name>-NNNNNN.tar`; a failure removes the shard being written.
fn write_split(
    out: &Path,
    name: &str,
    from: &str,
    set: &ImageSet,
    order: &[usize],
    opts: &PackOptions,
    progress: &dyn Fn(usize),
) -> Result<Split, DataError> {
    let mut split = Split {
        source_split: from.into(),
        samples: 0,
        shards: Vec::new(),
    };
    let mut open: Option<OpenShard> = None;
    let result = (|| -> Result<(), DataError> {
        for (c, chunk) in order.chunks(CHUNK).enumerate() {
            let jpegs = chunk
                .par_iter()
                .map(|&i| reencode(&set.files[i], opts.short_side, opts.quality))
                .collect::<Result<Vec<_>, _>>()?;
            for (k, (jpeg, &i)) in jpegs.iter().zip(chunk).enumerate() {
                // A sample adds two headers, its padded JPEG and a one-block label.
                let grows = 3 * BLOCK + padded(jpeg.len() as u64);
                let full = open
                    .as_ref()
                    .is_some_and(|s| s.tar.position() + grows + 2 * BLOCK > opts.shard_bytes);
                if full {
                    split.shards.push(open.take().expect("checked").finish()?);
                }
                if open.is_none() {
                    open = Some(OpenShard::create(out, format!("{name}-{:06}.tar", split.shards.len()))?);
                }
                let key = format!("{:09}", c * CHUNK + k);
                open.as_mut().expect("opened").append(key, set.labels[i], jpeg)?;
            }
            progress(chunk.len());
        }
        if let Some(s) = open.take() {
            split.shards.push(s.finish()?);
        }
        Ok(())
    })();
    if let Err(e) = result {
        if let Some(s) = open {
            drop(s.tar);
            let _ = std::fs::remove_file(&s.tmp);
        }
        return Err(e);
    }
    split.samples = split.shards.iter().map(|s| s.samples).sum();
    Ok(split)
}
