//! A spinner on stderr naming the current phase; hidden when stderr is not a terminal, so CI
//! logs and `--json` consumers only see the summary.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub fn new() -> Self {
        let bar = if std::io::stderr().is_terminal() {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.enable_steady_tick(Duration::from_millis(120));
            b
        } else {
            ProgressBar::hidden()
        };
        Progress { bar }
    }

    /// Name the phase now running.
    pub fn phase(&self, msg: impl Into<String>) {
        let msg = msg.into();
        tracing::debug!("{msg}");
        self.bar.set_message(msg);
    }

    /// Print a line without tearing the spinner. A failed write (stderr piped into `head`
    /// that has exited) is ignored: `eprintln!` would panic, and a panic in the middle of a
    /// run leaves its container and cgroup behind.
    pub fn println(&self, line: &str) {
        self.bar.suspend(|| errln!("{line}"));
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
