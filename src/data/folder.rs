//! ImageFolder: `root/<class>/<image>`; classes sorted by name (torchvision's order), images
//! sorted by file name. The tree is walked once per run into a [`FileList`]; the images are
//! then decoded once into memory ([`decode_all`]) or left on disk for the loader to stream.

use super::{DataError, Image, ImageSet};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let io = |source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        out.push(entry.map_err(io)?.path());
    }
    out.sort();
    Ok(out)
}

/// Decode one image file into RGB8.
pub fn decode(path: &Path) -> Result<Image, DataError> {
    let bytes = std::fs::read(path).map_err(super::io_err(path))?;
    decode_bytes(&bytes, path)
}

/// Decode an encoded image (JPEG or PNG) into RGB8; errors name `path`.
pub fn decode_bytes(bytes: &[u8], path: &Path) -> Result<Image, DataError> {
    super::decode::decode(bytes).map_err(|message| DataError::Decode {
        path: path.to_path_buf(),
        message,
    })
}

/// Read a class list: one class folder name per line; blank lines and `#` comments ignored.
pub fn read_class_list(path: &Path) -> Result<Vec<String>, DataError> {
    let text = std::fs::read_to_string(path).map_err(super::io_err(path))?;
    let mut names: Vec<String> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    names.sort();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(DataError::Layout {
            path: path.to_path_buf(),
            message: format!("class {:?} is listed twice", w[0]),
        });
    }
    if names.is_empty() {
        return Err(DataError::Layout {
            path: path.to_path_buf(),
            message: "lists no class".into(),
        });
    }
    Ok(names)
}

/// Walk `root/<class>/` once: the `.jpg/.jpeg/.png` files of every class folder, or only of the
/// classes in `only` (sorted names; each must exist under `root`), as a streamed set (files,
/// class by class, each class sorted by file name; nothing decoded).
pub fn list_image_folder(root: &Path, only: Option<&[String]>) -> Result<ImageSet, DataError> {
    let class_dirs: Vec<PathBuf> = match only {
        None => list_dir(root)?.into_iter().filter(|p| p.is_dir()).collect(),
        Some(names) => names.iter().map(|n| root.join(n)).collect(),
    };
    if let Some(missing) = class_dirs.iter().find(|d| !d.is_dir()) {
        return Err(DataError::Layout {
            path: missing.clone(),
            message: "class of data.class_list not found (no such folder)".into(),
        });
    }
    if class_dirs.is_empty() {
        return Err(DataError::Layout {
            path: root.to_path_buf(),
            message: "no class folders (expected root/<class>/<image>)".into(),
        });
    }
    let mut list = ImageSet::default();
    for (label, dir) in class_dirs.iter().enumerate() {
        list.classes
            .push(dir.file_name().unwrap_or_default().to_string_lossy().into_owned());
        for f in list_dir(dir)? {
            let ext = f.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase());
            if matches!(ext.as_deref(), Some("jpg" | "jpeg" | "png")) {
                list.files.push(f);
                list.labels.push(label as u32);
            }
        }
    }
    if list.files.is_empty() {
        return Err(DataError::Layout {
            path: root.to_path_buf(),
            message: "no .jpg/.jpeg/.png images".into(),
        });
    }
    Ok(list)
}

/// Estimated bytes of the decoded RGB8 images of `files`, from the headers of up to `probe`
/// files spread evenly over the list (a header read is a few KB; no pixel is decoded).
pub fn estimate_decoded_bytes(files: &[PathBuf], probe: usize) -> Result<u64, DataError> {
    if files.is_empty() {
        return Ok(0);
    }
    let step = (files.len() / probe.max(1)).max(1);
    let picked: Vec<&PathBuf> = files.iter().step_by(step).collect();
    let sizes = picked
        .par_iter()
        .map(|p| {
            let reader = image::ImageReader::open(p).map_err(super::io_err(p))?;
            let reader = reader.with_guessed_format().map_err(super::io_err(p))?;
            reader.into_dimensions().map_err(|e| DataError::Decode {
                path: p.to_path_buf(),
                message: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mean = sizes.iter().map(|&(w, h)| 3 * w as u64 * h as u64).sum::<u64>() as f64 / sizes.len() as f64;
    Ok((mean * files.len() as f64) as u64)
}

/// Decode every file of the streamed set `list` in parallel. With `skip_corrupt`, files that
/// do not decode are left out and returned; otherwise the first one is the error.
pub fn decode_all(list: ImageSet, skip_corrupt: bool) -> Result<(ImageSet, Vec<PathBuf>), DataError> {
    let decoded: Vec<Result<Image, DataError>> = list.files.par_iter().map(|f| decode(f)).collect();
    let mut set = ImageSet {
        classes: list.classes,
        ..Default::default()
    };
    let mut skipped = Vec::new();
    for ((img, path), label) in decoded.into_iter().zip(list.files).zip(list.labels) {
        match img {
            Ok(img) => {
                set.images.push(img);
                set.labels.push(label);
            }
            Err(DataError::Decode { .. }) if skip_corrupt => skipped.push(path),
            Err(e) => return Err(e),
        }
    }
    Ok((set, skipped))
}

/// Load and decode every image under `root/<class>/`.
pub fn load_image_folder(root: &Path) -> Result<ImageSet, DataError> {
    Ok(decode_all(list_image_folder(root, None)?, false)?.0)
}
