//! The one progress bar of long commands (`push`, `get`, `verify`): bytes done of the total, rate
//! and time left, on stderr. Shown only when stderr is a terminal and the output is for a person
//! (neither `--json` nor `--quiet`): anything else gets a hidden bar, so scripts, pipes and log
//! files never receive a stray escape sequence.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether a command may show progress at all, from the global flags.
#[derive(Clone, Copy, Debug)]
pub struct Show(pub bool);

impl Show {
    pub fn new(json: bool, quiet: bool) -> Self {
        Show(!json && !quiet)
    }
}

/// A bar over `total` bytes, or a hidden one (every call on it is then a no-op).
pub fn bytes(total: u64, show: Show) -> ProgressBar {
    if !show.0 || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    // The template is a constant, so this cannot fail at run time; a plain bar would do if it did.
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_or_quiet_hide_the_bar() {
        // Whatever stderr is, these must be hidden.
        assert!(bytes(10, Show::new(true, false)).is_hidden());
        assert!(bytes(10, Show::new(false, true)).is_hidden());
        assert!(bytes(10, Show::new(true, true)).is_hidden());
    }
}
