//! Datasets, as decoded 8-bit RGB images in memory or as image files streamed from disk, and
//! the pipeline that turns them into augmented, normalised batches.
//!
//! Sources: the built-in procedural dataset ([`synthetic`]), ImageFolder trees of JPEG/PNG
//! ([`folder`]), the CIFAR-10/100 binary format ([`cifar`]) and the STL-10 binary format
//! ([`stl10`]), and packs of WebDataset tar shards ([`shards`], made from an ImageFolder by
//! `moco data pack --format shards`). The binary sources are decoded once; an ImageFolder is
//! decoded once when it fits `data.memory_budget_gb` and streamed otherwise (`data.decode`):
//! its files are listed once per run and each sample is read, decoded and cropped when its
//! batch is prepared ([`sample`]; [`decode`] reads headers and decodes, at a DCT reduction where
//! the crop allows). Shards are always streamed: training reads them shard by shard through a
//! shuffle buffer, evaluation reads members by offset. [`geometry`] holds torchvision's crop and
//! resize geometry, [`augment`] the torchvision-semantics augmentations, [`loader`] the seeded
//! epoch order and the background batch producer. With the `hub` feature, [`download`] fetches
//! the official archives (`moco data download`).

pub mod augment;
pub mod cifar;
pub mod decode;
#[cfg(feature = "hub")]
pub mod download;
pub mod folder;
pub mod geometry;
pub mod loader;
pub mod sample;
pub mod shards;
pub mod stl10;
pub mod synthetic;

use crate::config::{effective_len, DataConfig, DataSource, DecodeMode, PretrainSplit};
use std::borrow::Cow;
use std::path::{Path, PathBuf};

/// One decoded image, 8-bit RGB, row-major HWC.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `height*width*3` bytes.
    pub pixels: Vec<u8>,
}

/// A labelled set of images: decoded in memory (`images`), image files on disk (`files`), or
/// JPEG members of tar shards (`members`, of the files `shards`); the last two are read and
/// decoded per sample ([`ImageSet::encoded`]). Exactly one of `images`, `files` and `members`
/// holds `labels.len()` entries.
#[derive(Debug, Clone, Default)]
pub struct ImageSet {
    /// Decoded images (empty for a streamed set).
    pub images: Vec<Image>,
    /// Encoded image files (empty for a decoded set).
    pub files: Vec<PathBuf>,
    /// JPEG members of the shard files `shards` (empty unless `data.source = "shards"`).
    pub members: Vec<Member>,
    /// The shard files that `members` point into.
    pub shards: Vec<PathBuf>,
    /// Class index per image.
    pub labels: Vec<u32>,
    /// Class names, index = label.
    pub classes: Vec<String>,
}

impl ImageSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// True when the images stay on disk and are decoded per sample.
    pub fn is_streamed(&self) -> bool {
        !self.files.is_empty() || !self.members.is_empty()
    }
    /// The encoded bytes of streamed image `i`: its file, or its member of a shard (read by
    /// offset). Errors name the file.
    pub fn encoded(&self, i: usize) -> Result<Vec<u8>, DataError> {
        if let Some(m) = self.members.get(i) {
            return shards::read_member(&self.shards[m.shard as usize], m);
        }
        let path = &self.files[i];
        std::fs::read(path).map_err(io_err(path))
    }
    /// How errors name streamed image `i`: its file, or `<shard>/<key>.jpg` for a member.
    pub fn source_path(&self, i: usize) -> Cow<'_, Path> {
        match self.members.get(i) {
            Some(m) => Cow::Owned(self.shards[m.shard as usize].join(format!("{}.jpg", m.key))),
            None => Cow::Borrowed(&self.files[i]),
        }
    }
    /// Keep the first `limit` images (0 = all).
    pub fn truncate(&mut self, limit: usize) {
        let n = effective_len(self.len(), limit);
        self.images.truncate(n);
        self.files.truncate(n);
        self.members.truncate(n);
        self.labels.truncate(n);
    }
    /// Keep a class-balanced prefix of `limit` images (0 = all): images are taken in
    /// round-robin over classes so a small limit still covers every class.
    pub fn take_balanced(&mut self, limit: usize) {
        if limit == 0 || limit >= self.len() {
            return;
        }
        let k = self.classes.len().max(1);
        let mut per_class: Vec<Vec<usize>> = vec![Vec::new(); k];
        for (i, &l) in self.labels.iter().enumerate() {
            per_class[l as usize % k].push(i);
        }
        let mut order = Vec::with_capacity(limit);
        let mut round = 0;
        while order.len() < limit {
            let mut any = false;
            for c in &per_class {
                if let Some(&i) = c.get(round) {
                    order.push(i);
                    any = true;
                    if order.len() == limit {
                        break;
                    }
                }
            }
            if !any {
                break;
            }
            round += 1;
        }
        order.sort_unstable();
        if !self.members.is_empty() {
            self.members = order.iter().map(|&i| self.members[i].clone()).collect();
        } else if self.is_streamed() {
            self.files = order.iter().map(|&i| self.files[i].clone()).collect();
        } else {
            self.images = order.iter().map(|&i| self.images[i].clone()).collect();
        }
        self.labels = order.iter().map(|&i| self.labels[i]).collect();
    }
}

/// Where a shard member's JPEG lies: shard `shard` of [`ImageSet::shards`], `size` bytes from
/// `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Position of the shard file in [`ImageSet::shards`].
    pub shard: u32,
    /// The member's key (`<key>.jpg` in the tar).
    pub key: String,
    /// Offset of the JPEG's data in the shard.
    pub offset: u64,
    /// Bytes of the JPEG.
    pub size: u64,
}

/// Errors while loading a dataset; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// File system error.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// An image that does not decode.
    #[error("{path}: cannot decode image: {message}")]
    Decode {
        /// Path.
        path: PathBuf,
        /// Decoder message.
        message: String,
    },
    /// The layout on disk is not what the source expects.
    #[error("{path}: {message}")]
    Layout {
        /// Path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The data config breaks a rule (when not validated before).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// Label of an image that has none (STL-10's unlabeled split). Such images appear only in the
/// pre-training set of [`pretrain_set`], whose labels the contrastive step never reads; they are
/// never in [`Splits`], so the kNN memory and the linear classifier never see them.
pub const UNLABELED: u32 = u32::MAX;

/// `map_err` adapter: an I/O error on `path` as [`DataError::Io`].
pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Train and test splits, both labelled: the kNN memory / linear classifier is fit on `train`
/// and measured on `test`. The images of the contrastive step come from [`pretrain_set`].
#[derive(Debug, Clone)]
pub struct Splits {
    /// Training images (labels unused by the self-supervised step, used by kNN/linear).
    pub train: ImageSet,
    /// Test images.
    pub test: ImageSet,
    /// How an ImageFolder's images are held and why (`data.decode`), for the log; `None` for
    /// the sources that are always decoded.
    pub note: Option<String>,
}

/// Load the dataset a config names, applying the train/test limits (class-balanced).
pub fn load(cfg: &DataConfig, seed: u64) -> Result<Splits, DataError> {
    let mut splits = match cfg.source {
        DataSource::Synthetic => synthetic::generate(cfg, seed),
        DataSource::ImageFolder => return load_folder(cfg),
        DataSource::Shards => shards::load(cfg)?,
        DataSource::CifarBin => cifar::load_cifar_bin(&cfg.path)?,
        DataSource::Stl10 => stl10::load_stl10_bin(&cfg.path)?,
    };
    limit_and_check(&mut splits, cfg)?;
    Ok(splits)
}

/// The class-balanced train/test limits; an empty training split is an error.
fn limit_and_check(splits: &mut Splits, cfg: &DataConfig) -> Result<(), DataError> {
    splits.train.take_balanced(cfg.train_limit);
    splits.test.take_balanced(cfg.test_limit);
    if splits.train.is_empty() {
        return Err(DataError::Layout {
            path: cfg.path.clone(),
            message: "no training images".into(),
        });
    }
    Ok(())
}

/// Header reads behind the `auto` decode estimate.
const DECODE_PROBE: usize = 256;

/// The evaluation split of an ImageFolder: `test/`, or `val/` when there is no `test/` (the
/// layout of ImageNet's train/ + val/ once the val images are sorted into class folders).
pub fn test_split_dir(root: &Path) -> PathBuf {
    let test = root.join("test");
    let val = root.join("val");
    if !test.exists() && val.is_dir() {
        val
    } else {
        test
    }
}

/// An ImageFolder: both splits listed once (restricted to `data.class_list`), limited, then
/// decoded into memory or left on disk as `data.decode` and the memory budget decide.
fn load_folder(cfg: &DataConfig) -> Result<Splits, DataError> {
    let only = cfg.class_list.as_deref().map(folder::read_class_list).transpose()?;
    let train = folder::list_image_folder(&cfg.path.join("train"), only.as_deref())?;
    let test_dir = test_split_dir(&cfg.path);
    let mut test = folder::list_image_folder(&test_dir, only.as_deref())?;
    align_classes(&train, &mut test, &test_dir)?;
    let mut splits = Splits { train, test, note: None };
    limit_and_check(&mut splits, cfg)?;
    let budget = (cfg.memory_budget_gb * 1e9) as u64;
    let n = splits.train.len() + splits.test.len();
    let (stream, why) = match cfg.decode {
        DecodeMode::Stream => (true, "data.decode = \"stream\"".to_string()),
        DecodeMode::Memory => (false, "data.decode = \"memory\"".to_string()),
        DecodeMode::Auto => {
            let bytes = folder::estimate_decoded_bytes(&splits.train.files, DECODE_PROBE)?
                + folder::estimate_decoded_bytes(&splits.test.files, DECODE_PROBE)?;
            let fits = bytes <= budget;
            let verdict = if fits { "within" } else { "above" };
            let why = format!(
                "auto: the {n} images decode to about {:.2} GB, {verdict} data.memory_budget_gb = {}",
                bytes as f64 / 1e9,
                cfg.memory_budget_gb
            );
            (!fits, why)
        }
    };
    if stream {
        splits.note = Some(format!("streaming {n} image files from disk, decoded per sample ({why})"));
        return Ok(splits);
    }
    let mut skipped = Vec::new();
    for set in [&mut splits.train, &mut splits.test] {
        let (decoded, bad) = folder::decode_all(std::mem::take(set), cfg.skip_corrupt)?;
        *set = decoded;
        skipped.extend(bad);
    }
    let mut note = format!("decoded {n} images into memory ({why})");
    if !skipped.is_empty() {
        note += &format!(
            "; skipped {} that do not decode (data.skip_corrupt), first {}",
            skipped.len(),
            skipped[0].display()
        );
    }
    splits.note = Some(note);
    limit_and_check(&mut splits, cfg)?;
    Ok(splits)
}

/// Give the test split the training split's labels, by class name: a test class that the
/// training split lacks is an error (it could never be predicted, and its images would be
/// scored as wrong without a word).
fn align_classes(train: &ImageSet, test: &mut ImageSet, test_root: &std::path::Path) -> Result<(), DataError> {
    let mut map = Vec::with_capacity(test.classes.len());
    for name in &test.classes {
        match train.classes.iter().position(|c| c == name) {
            Some(i) => map.push(i as u32),
            None => {
                return Err(DataError::Layout {
                    path: test_root.join(name),
                    message: format!(
                        "class {name:?} is not in train/ (whose {} classes are the labels)",
                        train.classes.len()
                    ),
                })
            }
        }
    }
    for l in &mut test.labels {
        *l = map[*l as usize];
    }
    test.classes = train.classes.clone();
    Ok(())
}

/// The images the self-supervised step trains on, per `data.pretrain_split`: the labelled
/// `splits.train` (`train`, every source), or for STL-10 the first `data.train_limit` images
/// (0 = all) of `unlabeled_X.bin` (`unlabeled`), or both (`train+unlabeled`, train first).
/// Unlabeled images carry the label [`UNLABELED`]; evaluation keeps using `splits`.
pub fn pretrain_set(cfg: &DataConfig, splits: &Splits) -> Result<ImageSet, DataError> {
    if cfg.pretrain_split == PretrainSplit::Train {
        return Ok(splits.train.clone());
    }
    crate::config::check_pretrain_split(cfg)?;
    let unlabeled = stl10::load_unlabeled(&cfg.path, cfg.train_limit)?;
    Ok(match cfg.pretrain_split {
        PretrainSplit::Unlabeled => unlabeled,
        _ => {
            let mut set = splits.train.clone();
            set.images.extend(unlabeled.images);
            set.labels.extend(unlabeled.labels);
            set
        }
    })
}

/// A `w`×`h` test image with a fixed pattern in every channel (unit tests of the transforms).
#[cfg(test)]
pub(crate) fn test_image(w: usize, h: usize) -> Image {
    Image {
        width: w,
        height: h,
        pixels: (0..w * h * 3).map(|i| (i * 37 % 256) as u8).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::test_split_dir;

    #[test]
    fn val_is_the_test_split_only_when_there_is_no_test_folder() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert_eq!(test_split_dir(root), root.join("test"), "neither: test/ is named in the error");
        std::fs::create_dir(root.join("val")).unwrap();
        assert_eq!(test_split_dir(root), root.join("val"));
        std::fs::create_dir(root.join("test")).unwrap();
        assert_eq!(test_split_dir(root), root.join("test"));
    }
}
