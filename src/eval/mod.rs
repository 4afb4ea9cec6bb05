//! Evaluation of a frozen encoder: the weighted kNN monitor and the linear protocol.

pub mod features;
pub mod knn;
pub mod linear;
