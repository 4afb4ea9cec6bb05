//! One sample of an [`ImageSet`] through a transform, wherever its pixels live: a decoded
//! image in memory, or a file read and decoded now (streamed sets).
//!
//! A streamed file is read once per sample, whatever the number of views. With
//! `data.dct_scaling` off, it is decoded once at full size and every view goes through the
//! in-memory path, so a streamed epoch has the same bits as a decoded one. With it on, each
//! view's crop is drawn from the header's width and height, and the JPEG is decoded at the
//! largest DCT reduction that keeps the crop at least the output size: once per sample when
//! the views ask for the same reduction, once per distinct reduction otherwise.

use super::augment::{augment_encoded, augment_into, eval_encoded, eval_into, AugmentParams};
use super::decode::Encoded;
use super::{DataError, ImageSet};
use rand::Rng;
use std::path::Path;

/// Size, normalisation and decoding of a transform's output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Output {
    /// Side of the square output in pixels.
    pub image_size: usize,
    /// Normalisation mean.
    pub mean: [f32; 3],
    /// Normalisation std.
    pub std: [f32; 3],
    /// Decode streamed JPEGs at a DCT reduction when the crop allows (`data.dct_scaling`).
    pub dct: bool,
    /// Evaluation transform: short side to `image_size / eval_crop_fraction`, center crop.
    pub eval_crop_fraction: f32,
    /// A streamed file that does not decode gives way to the next image instead of failing
    /// (`data.skip_corrupt`).
    pub skip_corrupt: bool,
}

impl Output {
    /// The output a data config asks for.
    pub fn of(d: &crate::config::DataConfig) -> Self {
        Self {
            image_size: d.image_size,
            mean: d.mean.map(|v| v as f32),
            std: d.std.map(|v| v as f32),
            dct: d.dct_scaling,
            eval_crop_fraction: d.eval_crop_fraction as f32,
            skip_corrupt: d.skip_corrupt,
        }
    }
}

fn decode_err(path: &Path) -> impl FnOnce(String) -> DataError + '_ {
    move |message| DataError::Decode {
        path: path.to_path_buf(),
        message,
    }
}

/// Write `outs.len()` augmented views of image `i` into `outs` (each `3·S·S`, CHW), drawing
/// every random choice from `rng` in view order.
pub fn augment_views(
    set: &ImageSet,
    i: usize,
    params: &AugmentParams,
    o: &Output,
    rng: &mut impl Rng,
    outs: &mut [&mut [f32]],
) -> Result<(), DataError> {
    let (size, mean, std) = (o.image_size, o.mean, o.std);
    if !set.is_streamed() {
        for out in outs.iter_mut() {
            augment_into(&set.images[i], params, size, mean, std, rng, out);
        }
        return Ok(());
    }
    let path = set.source_path(i);
    augment_encoded_views(&set.encoded(i)?, &path, params, o, rng, outs)
}

/// [`augment_views`] for one encoded file already read (`bytes`, named `path` in errors): a
/// streamed folder's file or a shard's member.
pub fn augment_encoded_views(
    bytes: &[u8],
    path: &Path,
    params: &AugmentParams,
    o: &Output,
    rng: &mut impl Rng,
    outs: &mut [&mut [f32]],
) -> Result<(), DataError> {
    let (size, mean, std) = (o.image_size, o.mean, o.std);
    let mut src = Encoded::new(bytes, o.dct);
    for out in outs.iter_mut() {
        augment_encoded(&mut src, params, size, mean, std, rng, out).map_err(decode_err(path))?;
    }
    Ok(())
}

/// Write the evaluation view of image `i` into `out` (`3·S·S`, CHW); under `skip_corrupt`, a
/// file that does not decode gives way to the next image of the set (said on stderr), so the
/// feature matrix keeps one row per image.
pub fn eval_view_or_next(set: &ImageSet, i: usize, o: &Output, out: &mut [f32]) -> Result<(), DataError> {
    let mut tries = 0;
    loop {
        match eval_view(set, (i + tries) % set.len(), o, out) {
            Err(DataError::Decode { path, message }) if o.skip_corrupt && tries + 1 < MAX_SKIPS => {
                eprintln!(
                    "data: {}: cannot decode ({message}); evaluated as the next image (data.skip_corrupt)",
                    path.display()
                );
                tries += 1;
            }
            r => return r,
        }
    }
}

/// Samples tried in a row, under `skip_corrupt`, before giving up.
pub const MAX_SKIPS: usize = 16;

/// Write the evaluation view of image `i` into `out` (`3·S·S`, CHW).
pub fn eval_view(set: &ImageSet, i: usize, o: &Output, out: &mut [f32]) -> Result<(), DataError> {
    let (size, frac) = (o.image_size, o.eval_crop_fraction);
    if !set.is_streamed() {
        eval_into(&set.images[i], size, frac, o.mean, o.std, out);
        return Ok(());
    }
    let path = set.source_path(i);
    let bytes = set.encoded(i)?;
    eval_encoded(&bytes, size, frac, o.mean, o.std, out, o.dct).map_err(decode_err(&path))
}
