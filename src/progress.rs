//! Progress bars with elapsed time and ETA for long work (epochs, feature extraction, the
//! linear protocol). Hidden when asked, and by indicatif itself when stderr is not a terminal.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` units labelled `prefix`; a hidden one unless `show`.
pub fn bar(len: u64, prefix: String, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_prefix(prefix);
    pb
}
