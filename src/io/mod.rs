//! Files: atomic writes, safetensors checkpoints, run directories.

pub mod atomic;
pub mod checkpoint;
pub mod run_dir;
