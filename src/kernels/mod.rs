//! CPU kernels for the ops of the training step where candle's composed CPU ops are slow, each
//! exposed as an op that picks its device path itself, as candle-nn's `ops::softmax_last_dim`
//! does: on CPU a candle custom op with its own backward (so autograd is unchanged), on other
//! devices — or on a thread that turned the kernels off with [`set_enabled`] — the same
//! computation as candle's composed ops, which live here beside the kernel. Callers just call
//! the op.
//!
//! - [`conv`]: 2-D convolution ([`conv::conv2d`]) by Winograd, implicit GEMM or im2col + GEMM,
//!   both gradients in one backward pass; its tuning knobs in [`conv::knobs`].
//! - [`batch_norm`]: train-mode BatchNorm with per-group statistics, optionally followed by a
//!   ReLU or a residual add + ReLU in the same node ([`batch_norm::forward_train`]).
//! - [`elementwise`]: `max(0, a + b)`, the residual join ([`add_relu`]).
//! - [`infonce`]: the InfoNCE loss of queries against a positive and K negatives without the
//!   `(N, 1+K)` logits ([`infonce::info_nce`]), and its composed form.
//! - [`update`]: the key encoder's EMA and the SGD momentum step, in place.
//! - [`packed`]: our two GEMM microkernels (8×32 and the 6×64 wide tile), used by `conv`.
//! - `sgemm`: row-major products on the `gemm` crate and a blocked transpose (`conv`,
//!   `infonce`).
//! - `cpu`: what all of them share: the per-thread switch, CPU storage as slices, output
//!   buffers.
//!
//! Nothing here imports the model, the training loop or anything above them.

pub mod batch_norm;
pub mod conv;
mod cpu;
pub mod elementwise;
pub mod infonce;
pub mod packed;
mod sgemm;
pub mod update;

pub use cpu::{set_enabled, ELEMWISE_CHUNK};
pub use elementwise::add_relu;
