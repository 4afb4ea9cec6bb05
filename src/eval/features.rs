//! Features of a frozen encoder (BN in eval mode) over a whole image set.

use crate::config::FeatureKind;
use crate::data::loader::eval_batch;
use crate::data::ImageSet;
use crate::model::{BnMode, Encoder};
use candle_core::{Device, Result, Tensor};

/// Size, normalisation and decoding of the evaluation transform.
pub use crate::data::sample::Output as EvalInput;

/// Features `(N, D)` of every image (backbone or head output, not normalised), in batches.
pub fn extract(
    encoder: &Encoder,
    data: &ImageSet,
    input: EvalInput,
    kind: FeatureKind,
    batch: usize,
    device: &Device,
    progress: impl FnMut(usize),
) -> Result<Tensor> {
    let idx: Vec<usize> = (0..data.len()).collect();
    extract_indices(encoder, data, &idx, input, kind, batch, device, progress)
}

/// Features `(len, D)` of the images `indices` (in that order), in batches of `batch`. The
/// encoder's BatchNorm uses its running statistics, so an image's features do not depend on
/// the batch it is extracted in.
#[allow(clippy::too_many_arguments)]
pub fn extract_indices(
    encoder: &Encoder,
    data: &ImageSet,
    indices: &[usize],
    input: EvalInput,
    kind: FeatureKind,
    batch: usize,
    device: &Device,
    mut progress: impl FnMut(usize),
) -> Result<Tensor> {
    let mut parts = Vec::new();
    for chunk in indices.chunks(batch.max(1)) {
        let x = eval_batch(data, chunk, &input).map_err(candle_core::Error::wrap)?;
        let x = Tensor::from_vec(x, (chunk.len(), 3, input.image_size, input.image_size), device)?;
        let f = encoder.features(&x, BnMode::Eval)?;
        let f = match kind {
            FeatureKind::Backbone => f,
            FeatureKind::Head => encoder.head().forward(&f)?,
        };
        parts.push(f.detach());
        progress(chunk.len());
    }
    Tensor::cat(&parts, 0)
}
