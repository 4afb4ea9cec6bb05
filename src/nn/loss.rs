//! The losses: InfoNCE (the paper's Eq. 1; the op and its composed form live beside their CPU
//! kernel, [`crate::kernels::infonce`], and are re-exported here), the L2 normalisation of
//! features and the cross-entropy of the linear protocol.

use candle_core::{Result, Tensor};

pub use crate::kernels::infonce::{contrast_acc1, contrastive_logits, info_nce, info_nce_loss};

/// `x / max(‖x‖₂, 1e-12)` along dim 1, as `torch.nn.functional.normalize`.
///
/// # Shapes
/// `(N, C)` → `(N, C)`
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(1e-12)?;
    x.broadcast_div(&norm)
}

/// Cross-entropy of `logits (N, classes)` against `labels (N,)` u32, averaged.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    candle_nn::loss::cross_entropy(logits, labels)
}
