//! Files: atomic writes, safetensors checkpoints (and reading a published encoder back into
//! the run layout), run directories, CSV tables, and the one error they share.

pub mod atomic;
pub mod checkpoint;
pub mod error;
pub mod run_dir;
pub mod table;
