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
            eprintln!("error: {}", one_line(&e));
            std::process::exit(1);
        }
    }
}

/// The error and its causes on one line, each cause once: a library error whose message
/// already quotes its cause (`"{path}: {source}"`) does not get it printed a second time.
fn one_line(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain().map(|c| c.to_string()) {
        if msg.contains(&cause) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&cause);
    }
    msg
}
