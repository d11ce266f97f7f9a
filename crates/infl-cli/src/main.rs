//! The `infl` command: training-data attribution from safetensors checkpoints and
//! features.
//!
//! Subcommands: `demo` (train an MLP on MNIST with label noise and judge the mislabel
//! detectors), `scores` (the full `[test, train]` matrix), `topk` (proponents and
//! opponents of each test example, streamed), `self-influence` (per training example,
//! plus a ranked list of likely mislabelled examples). Results go to files, written to a
//! temporary file and renamed; a short human summary goes to stdout; progress bars to
//! stderr.

mod cli;
mod demo;
mod output;
mod plots;
mod progress;

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

fn main() -> std::process::ExitCode {
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
