//! indicatif progress bars behind infl's `Progress` trait (hidden when stderr is not a
//! terminal).

use indicatif::{ProgressBar, ProgressStyle};
use std::sync::Mutex;

/// A progress bar that is re-armed for each phase.
pub struct Bar {
    bar: Mutex<Option<ProgressBar>>,
    quiet: bool,
}

impl Bar {
    pub fn new(quiet: bool) -> Self {
        Self {
            bar: Mutex::new(None),
            quiet,
        }
    }

    /// True when progress output is off.
    pub fn quiet(&self) -> bool {
        self.quiet
    }

    fn style() -> ProgressStyle {
        ProgressStyle::with_template("{msg:>14} [{bar:32}] {pos}/{len} ({elapsed}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ")
    }
}

impl infl::Progress for Bar {
    fn start(&self, what: &str, total: u64) {
        if self.quiet {
            return;
        }
        let bar = ProgressBar::new(total).with_style(Self::style());
        bar.set_message(what.to_string());
        *self.bar.lock().expect("progress lock") = Some(bar);
    }

    fn advance(&self, n: u64) {
        if let Some(b) = &*self.bar.lock().expect("progress lock") {
            b.inc(n);
        }
    }

    fn finish(&self) {
        if let Some(b) = self.bar.lock().expect("progress lock").take() {
            b.finish_and_clear();
        }
    }
}
