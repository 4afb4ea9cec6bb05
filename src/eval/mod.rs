//! Evaluation of a frozen encoder (BN in eval mode):
//!
//! - [`features`]: backbone or head features of an image set, in batches.
//! - [`knn`]: the weighted kNN monitor (Wu et al. 2018), searched over the training set in
//!   chunks (`eval.knn_chunk`).
//! - [`feature_norm`]: the optional BatchNorm in front of the linear classifier.
//! - [`linear`]: the linear classification protocol.
//! - [`protocol`]: both over a dataset's splits as a config asks, with progress bars.

pub mod feature_norm;
pub mod features;
pub mod knn;
pub mod linear;
pub mod protocol;

pub use protocol::{eval_input, knn_eval, linear_eval};
