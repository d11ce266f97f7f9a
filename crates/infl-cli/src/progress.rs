//! indicatif progress bars behind infl's `Progress` trait (hidden when stderr is not a
//! terminal): one adapter for the subcommands and the demo.

use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// The subcommands' template: the phase's name, then the bar.
const DEFAULT_TEMPLATE: &str = "{msg:>14} [{bar:32}] {pos}/{len} ({elapsed}, eta {eta})";

/// indicatif's spinner: the spinner, then the phase's name.
pub const SPINNER: &str = "{spinner} {msg}";

/// How often a spinner redraws itself.
const SPINNER_TICK: Duration = Duration::from_millis(120);

/// A progress bar that is re-armed for each phase.
pub struct Bar {
    bar: Mutex<Option<ProgressBar>>,
    quiet: bool,
    template: &'static str,
}

impl Bar {
    /// A bar with the subcommands' template; `quiet` turns it off.
    pub fn new(quiet: bool) -> Self {
        Self {
            bar: Mutex::new(None),
            quiet,
            template: DEFAULT_TEMPLATE,
        }
    }

    /// A bar drawn with an indicatif `template` (`{msg}` shows the phase's name, then
    /// [`set_message`](Bar::set_message)'s), for the demo, which has no quiet mode.
    pub fn templated(template: &'static str) -> Self {
        Self {
            template,
            ..Self::new(false)
        }
    }

    /// True when progress output is off.
    pub fn quiet(&self) -> bool {
        self.quiet
    }

    /// Starts a phase of unknown length, drawn as a spinner (with a template such as
    /// [`SPINNER`]) that ticks by itself until [`finish`](infl::Progress::finish).
    pub fn spin(&self, what: &str) {
        if self.quiet {
            return;
        }
        let bar = ProgressBar::new_spinner().with_style(self.style());
        bar.set_message(what.to_string());
        bar.enable_steady_tick(SPINNER_TICK);
        self.replace(Some(bar));
    }

    /// Replaces the message of the current phase.
    pub fn set_message(&self, message: String) {
        if let Some(b) = &*self.lock() {
            b.set_message(message);
        }
    }

    fn style(&self) -> ProgressStyle {
        ProgressStyle::with_template(self.template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<ProgressBar>> {
        self.bar.lock().expect("progress lock")
    }

    /// Installs `bar` as the current phase, clearing the previous one.
    fn replace(&self, bar: Option<ProgressBar>) {
        if let Some(old) = std::mem::replace(&mut *self.lock(), bar) {
            old.finish_and_clear();
        }
    }
}

impl infl::Progress for Bar {
    fn start(&self, what: &str, total: u64) {
        if self.quiet {
            return;
        }
        let bar = ProgressBar::new(total).with_style(self.style());
        bar.set_message(what.to_string());
        self.replace(Some(bar));
    }

    fn advance(&self, n: u64) {
        if let Some(b) = &*self.lock() {
            b.inc(n);
        }
    }

    fn finish(&self) {
        self.replace(None);
    }
}
