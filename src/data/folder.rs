//! ImageFolder: `root/<class>/<image>`; classes sorted by name (torchvision's order), images
//! sorted by file name, decoded in parallel once.

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
    let img = image::load_from_memory(&bytes)
        .map_err(|e| DataError::Decode {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?
        .to_rgb8();
    Ok(Image {
        width: img.width() as usize,
        height: img.height() as usize,
        pixels: img.into_raw(),
    })
}

/// Load every image under `root/<class>/`.
pub fn load_image_folder(root: &Path) -> Result<ImageSet, DataError> {
    let class_dirs: Vec<PathBuf> = list_dir(root)?.into_iter().filter(|p| p.is_dir()).collect();
    if class_dirs.is_empty() {
        return Err(DataError::Layout {
            path: root.to_path_buf(),
            message: "no class folders (expected root/<class>/<image>)".into(),
        });
    }
    let mut files = Vec::new();
    let mut classes = Vec::new();
    for (label, dir) in class_dirs.iter().enumerate() {
        classes.push(dir.file_name().unwrap_or_default().to_string_lossy().into_owned());
        for f in list_dir(dir)? {
            let ext = f.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase());
            if matches!(ext.as_deref(), Some("jpg" | "jpeg" | "png")) {
                files.push((f, label as u32));
            }
        }
    }
    if files.is_empty() {
        return Err(DataError::Layout {
            path: root.to_path_buf(),
            message: "no .jpg/.jpeg/.png images".into(),
        });
    }
    let images = files.par_iter().map(|(f, _)| decode(f)).collect::<Result<Vec<_>, _>>()?;
    Ok(ImageSet {
        images,
        labels: files.iter().map(|(_, l)| *l).collect(),
        classes,
    })
}
