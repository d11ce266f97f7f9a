//! The `infl` command: training-data attribution from safetensors checkpoints and
//! features.
//!
//! Subcommands: `demo` (train an MLP on MNIST with label noise and judge the mislabel
//! detectors), `scores` (the full `[test, train]` matrix), `topk` (proponents and
//! opponents of each test example, streamed; with `--plot DIR` a PNG of each), `self-
//! influence` (per training example, plus a ranked list of likely mislabelled examples),
//! each of them on a shard of the training rows with `--shard i/N`, `merge` (parts into
//! the whole result), `fit` (influence functions' Hessian, saved) and `eval loo|lds`
//! (counterfactual evaluation of every estimator against retraining). Results go to files,
//! written to a temporary file (or folder) and renamed; a short human summary goes to
//! stdout; progress bars (fits, solves and scoring, with an ETA) to stderr.

mod cli;
mod demo;
mod eval;
mod index;
mod merge;
mod output;
mod plots;
mod progress;
mod resources;
mod topk_plot;

use clap::Parser;

/// Exit code of a run stopped by SIGINT, SIGTERM or SIGHUP (the shell's 128 + SIGINT).
const INTERRUPTED: i32 = 130;

/// On SIGINT, SIGTERM or SIGHUP: remove every staged temporary file, then exit. A result
/// set being published is finished first (see `infl::io::Publication`), so outputs are
/// whole or absent.
fn remove_temporary_files_on_interrupt() {
    let installed = ctrlc::set_handler(|| {
        let removed = infl::io::remove_temporary_files();
        eprintln!("interrupted: removed {removed} temporary file(s); no partial output");
        std::process::exit(INTERRUPTED);
    });
    if let Err(e) = installed {
        eprintln!("warning: cannot handle interrupts ({e}); temporary files may stay behind");
    }
}

/// Without a desktop session (`XDG_RUNTIME_DIR` unset or not a folder: SSH, containers,
/// CI), Mesa's implicit Vulkan layer `VK_LAYER_MESA_device_select`, whose only job is to put
/// the display's GPU first, tries to reach a Wayland display and prints
/// `error: XDG_RUNTIME_DIR is invalid or not set` twice on every run that looks for a GPU.
/// There is no display to prefer there, so the layer is switched off (`NODEVICE_SELECT=1`,
/// its own switch), unless the user set that variable.
fn quiet_device_select_without_a_session() {
    let session =
        std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| std::path::Path::new(&d).is_dir());
    if !session && std::env::var_os("NODEVICE_SELECT").is_none() {
        // SAFETY: called first in `main`, before any other thread exists, so nothing reads
        // the environment concurrently.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("NODEVICE_SELECT", "1");
        }
    }
}

/// `infl topk ... | head` closes stdout early: the summary is printed after the results
/// are published, and Rust's `println!` would panic on the broken pipe. Restore the Unix
/// default (end quietly on SIGPIPE), as `cat` or `grep` do.
fn end_quietly_on_a_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: called first in `main`, before any other thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> std::process::ExitCode {
    end_quietly_on_a_closed_pipe();
    quiet_device_select_without_a_session();
    let args = cli::Cli::parse();
    remove_temporary_files_on_interrupt();
    match cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            // Errors that wrap a source often print it in their own message too
            // (`backend wgpu: <the GPU error>`): say each cause once.
            let mut said = e.to_string();
            for cause in e.chain().skip(1) {
                let cause = cause.to_string();
                if !said.contains(&cause) {
                    eprintln!("  caused by: {cause}");
                    said.push_str(&cause);
                }
            }
            std::process::ExitCode::FAILURE
        }
    }
}
