//! Training pieces that both [`crate::train`] and [`crate::eval`] use, each a pure function or a
//! small state over tensors:
//!
//! - [`loss`]: InfoNCE (MoCo's loss, the positive at index 0), cross-entropy, L2 normalisation.
//! - [`optim`]: SGD with momentum and weight decay, PyTorch semantics.
//! - [`ema`]: the key encoder's update θk ← m·θk + (1−m)·θq over parameters matched by name.
//! - [`schedule`]: learning-rate schedules (cosine, step, constant, warm-up).

pub mod ema;
pub mod loss;
pub mod optim;
pub mod schedule;
