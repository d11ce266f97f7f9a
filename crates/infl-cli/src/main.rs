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

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}
