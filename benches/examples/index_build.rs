//! Builds one index of synthetic embeddings (`infl_benches::index_data`: low rank + noise,
//! heavy-tailed norms, seeded) and reports the build time, rows/s, the files' sizes and
//! the process's peak RSS (`VmHWM`) after generating the data and after the build; run it
//! under `/usr/bin/time -v` for the kernel's own peak-RSS figure (BENCHMARKS.md, "Index:
//! build and query").
//!
//! `cargo run --release -p infl-benches --example index_build -- [--rows 1000000]
//! [--width 64] [--dir DIR] [--keep]`

use std::path::PathBuf;
use std::time::Instant;

use infl::index::{BuildOptions, Index, Training};
use infl::io::Inputs;
use infl_benches::index_data::{embeddings, one_term, recipe};

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// `VmHWM` (peak RSS) and `VmRSS` of this process, in MiB.
fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(f64::NAN, |kib| kib / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn main() -> Res<()> {
    let (mut rows, mut width, mut keep) = (1_000_000usize, 64usize, false);
    let mut dir = std::env::temp_dir().join("infl-index-build");
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--keep" => keep = true,
            "--rows" => rows = it.next().ok_or("--rows N")?.parse()?,
            "--width" => width = it.next().ok_or("--width E")?.parse()?,
            "--dir" => dir = PathBuf::from(it.next().ok_or("--dir DIR")?),
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let t = Instant::now();
    let set = one_term(embeddings(rows, width, 7), None);
    let ids: Vec<i64> = (0..rows as i64).collect();
    let (hwm, rss) = memory();
    println!(
        "generated {rows} x {width} in {:.1} s; peak RSS {hwm:.0} MiB, RSS {rss:.0} MiB \
         (input embeddings {:.0} MiB)",
        t.elapsed().as_secs_f64(),
        (rows * width * 4) as f64 / (1 << 20) as f64
    );
    let t = Instant::now();
    let index = Index::build(
        Training {
            set: &set,
            ids: &ids,
        },
        &recipe(&set),
        &dir,
        &Inputs::none(),
        &BuildOptions::default(),
    )?;
    let secs = t.elapsed().as_secs_f64();
    let (hwm, rss) = memory();
    println!(
        "built (and opened) in {secs:.1} s = {:.0} rows/s on {} threads; peak RSS {hwm:.0} MiB, \
         RSS {rss:.0} MiB",
        rows as f64 / secs,
        rayon::current_num_threads()
    );
    let mut total = 0;
    for e in std::fs::read_dir(&dir)? {
        let e = e?;
        let len = e.metadata()?.len();
        total += len;
        println!(
            "  {}: {:.1} MiB",
            e.file_name().to_string_lossy(),
            len as f64 / (1 << 20) as f64
        );
    }
    println!(
        "  total on disk: {:.1} MiB",
        total as f64 / (1 << 20) as f64
    );
    drop(index);
    if !keep {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}
