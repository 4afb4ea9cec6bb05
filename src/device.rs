//! The device a config asks for (`device = "cpu" | "cuda" | "cuda:N" | "auto"`), and its name
//! in results. The same code path runs on every device; only this module asks which one.

use crate::config::{parse_device, ConfigError, DeviceRequest};
use candle_core::Device;

/// Why a device could not be had.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Not one of cpu, cuda, cuda:N, auto.
    #[error(transparent)]
    Spec(#[from] ConfigError),
    /// CUDA asked for, but the binary has no CUDA support.
    #[error("device = {0:?}: this binary is built without CUDA (cargo build --release --features cuda)")]
    NoCudaBuild(String),
    /// The driver or the device index failed.
    #[error("device = {spec:?}: no usable CUDA device {index}: {message}")]
    Cuda {
        /// What was asked.
        spec: String,
        /// Device index.
        index: usize,
        /// candle's message (first line).
        message: String,
    },
}

/// The device `spec` names; `auto` falls back to the CPU (with a line on stderr) when CUDA is
/// built in but no GPU answers.
pub fn make_device(spec: &str) -> Result<Device, DeviceError> {
    // candle's errors carry a backtrace in their Display; the first line is the message.
    let first_line = |e: candle_core::Error| e.to_string().lines().next().unwrap_or_default().to_string();
    Ok(match parse_device(spec)? {
        DeviceRequest::Cpu => Device::Cpu,
        DeviceRequest::Cuda(_) if !cfg!(feature = "cuda") => return Err(DeviceError::NoCudaBuild(spec.into())),
        DeviceRequest::Cuda(index) => Device::new_cuda(index).map_err(|e| DeviceError::Cuda {
            spec: spec.into(),
            index,
            message: first_line(e),
        })?,
        DeviceRequest::Auto if cfg!(feature = "cuda") => match Device::new_cuda(0) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("device = \"auto\": no usable CUDA device ({}); using the CPU", first_line(e));
                Device::Cpu
            }
        },
        DeviceRequest::Auto => Device::Cpu,
    })
}

/// Human-readable device name for results (`cpu (2 threads)`, `cuda`).
pub fn describe_device(d: &Device) -> String {
    match d {
        Device::Cpu => format!("cpu ({} threads)", rayon::current_num_threads()),
        Device::Cuda(_) => "cuda".into(),
        Device::Metal(_) => "metal".into(),
    }
}
