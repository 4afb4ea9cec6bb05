//! `moco`: thin entry point; all logic lives in the library.

use clap::Parser;

fn main() {
    let args = moco_harness::cli::Cli::parse();
    match moco_harness::cli::run(args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
