//! Memory budgets: work that cannot fit in the memory available is refused before it is
//! allocated, with a message that says what to do instead (never an allocation abort or
//! the OOM killer). Linux reads `MemAvailable`; elsewhere the allocations' own checks
//! (`try_reserve`) are the guard.

use anyhow::{Result, bail};
use infl::Run;

/// One part of a job's memory, with the option that controls it (infl's type, so that
/// estimators can state theirs).
pub use infl::estimators::MemoryNeed as Need;

fn gib(bytes: f64) -> f64 {
    bytes / (1u64 << 30) as f64
}

/// Refuses a job whose parts add up to more than the memory available, listing the parts
/// largest first with the option that sizes each; `instead` says what to do.
pub fn check_fits(job: &str, needs: &[Need], instead: &str) -> Result<()> {
    let total: f64 = needs.iter().map(|n| n.bytes).sum();
    let Some(avail) = available_memory() else {
        return Ok(());
    };
    if total <= avail as f64 {
        return Ok(());
    }
    let mut parts: Vec<&Need> = needs.iter().collect();
    parts.sort_by(|a, b| b.bytes.total_cmp(&a.bytes));
    let parts: Vec<String> = parts
        .iter()
        .map(|n| format!("{}: {} {:.1} GiB", n.flag, n.what, gib(n.bytes)))
        .collect();
    bail!(
        "{job} needs about {:.1} GiB, but {:.1} GiB of memory is available ({}): {instead}",
        gib(total),
        gib(avail as f64),
        parts.join(", ")
    )
}

/// Refuses a full score matrix that would not fit in the memory available: `scores` holds
/// it about four times at its peak (the result, its f32 copy and byte image for the file,
/// the file buffer).
pub fn check_memory_for_scores(run: &Run) -> Result<()> {
    let (nq, nt) = (run.n_test(), run.n_train());
    check_fits(
        &format!("the full [{nq} x {nt}] score matrix"),
        &[Need {
            what: "the matrix and its copies while it is written",
            flag: "test x train",
            bytes: 4.0 * nq as f64 * nt as f64 * 4.0,
        }],
        "use `infl topk` (streamed, memory O(test x k)) or fewer test examples",
    )
}

/// `MemAvailable` of /proc/meminfo, in bytes.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// An estimator's own plan ([`infl::Estimator::memory`]): printed to stderr when above
/// 2 GiB (Kronfluence users ask for this before a long fit) and refused when above the
/// memory available.
pub fn check_plan(plan: &infl::estimators::MemoryPlan, quiet: bool) -> Result<()> {
    let total: f64 = plan.needs.iter().map(|x| x.bytes).sum();
    if !quiet && total > 2.0 * (1u64 << 30) as f64 {
        eprintln!("{}: about {:.1} GiB of memory", plan.job, gib(total));
    }
    check_fits(plan.job, &plan.needs, plan.instead)
}
