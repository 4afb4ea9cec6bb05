//! `moco`: thin entry point; all logic lives in the library.

use clap::Parser;

fn main() {
    // glibc returns large freed blocks to the OS (mmap threshold, trim), so every step's
    // fresh activations page-fault and get zeroed again (~20% of a CPU step, measured with
    // perf). Keep freed memory in the process instead.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
    let args = moco_harness::cli::Cli::parse();
    match moco_harness::cli::run(args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
