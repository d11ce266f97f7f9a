//! Retraining results cached on disk, so that an interrupted evaluation resumes.
//!
//! A cache is a folder with `config.json` (everything that determines the results: data,
//! model, trainer settings, subsets or removals, seeds) and one `KEY.json` per finished
//! retraining (an [`Outcome`], f64 written with shortest round-trip digits, so a resumed
//! run reads back the exact bits). Every file is published atomically (temp file +
//! rename), so a result is whole or absent. A folder made by another configuration is
//! refused, naming the first setting that differs; nothing in it is touched.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde_json::Value;

use super::{Job, Outcome, Retrainer};
use crate::engine::Progress;
use crate::{Error, Result};

/// The file holding a cache's configuration.
const CONFIG: &str = "config.json";

/// A folder of cached retraining results for one configuration.
#[derive(Clone, Debug)]
pub struct Cache {
    dir: PathBuf,
    /// Test examples per outcome.
    tests: usize,
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io(infl_io::Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The first key (dotted path) where `a` and `b` differ.
fn first_difference(a: &Value, b: &Value, at: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.keys()
                .chain(y.keys())
                .find_map(|k| match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => first_difference(u, v, &format!("{at}.{k}")),
                    _ => Some(format!("{at}.{k}")),
                })
        }
        _ if a == b => None,
        _ => Some(at.to_string()),
    }
}

impl Cache {
    /// Opens (or creates) the cache folder `dir` for `config`, whose outcomes have `tests`
    /// values each. A folder whose `config.json` differs is refused.
    pub fn open(dir: impl Into<PathBuf>, config: &Value, tests: usize) -> Result<Self> {
        let dir = dir.into();
        let path = dir.join(CONFIG);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let found: Value = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::config(
                        "cache",
                        format!("{}: not a cache configuration: {e}", path.display()),
                    )
                })?;
                if let Some(key) = first_difference(config, &found, "config") {
                    return Err(Error::config(
                        "cache",
                        format!(
                            "{} was made by a different configuration ({key} differs); use another \
                             cache folder or delete this one",
                            dir.display()
                        ),
                    ));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
                let text = serde_json::to_vec_pretty(config)
                    .map_err(|e| Error::config("cache", e.to_string()))?;
                infl_io::write_atomic(&path, &text)?;
            }
            Err(e) => return Err(io(&path, e)),
        }
        Ok(Self { dir, tests })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    /// The cached outcome of `key`, if finished.
    pub fn load(&self, key: &str) -> Result<Option<Outcome>> {
        let path = self.path(key);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path, e)),
        };
        let outcome: Outcome = serde_json::from_slice(&bytes).map_err(|e| {
            Error::config(
                "cache",
                format!("{}: not a cached outcome: {e}", path.display()),
            )
        })?;
        if outcome.loss.len() != self.tests || outcome.margin.len() != self.tests {
            return Err(Error::config(
                "cache",
                format!(
                    "{}: expected {} test values, found {}; delete the cache folder",
                    path.display(),
                    self.tests,
                    outcome.loss.len()
                ),
            ));
        }
        Ok(Some(outcome))
    }

    /// Publishes the outcome of `key`.
    pub fn store(&self, key: &str, outcome: &Outcome) -> Result<()> {
        let text =
            serde_json::to_vec(outcome).map_err(|e| Error::config("cache", e.to_string()))?;
        infl_io::write_atomic(self.path(key), &text)?;
        Ok(())
    }
}

/// Runs every job not already in `cache` (in parallel on rayon's pool; each worker holds
/// one model at a time), stores each outcome as it finishes, and returns the outcomes in
/// the order of `jobs`. The first error stops the run; finished jobs stay cached.
pub fn retrain_all(
    retrainer: &dyn Retrainer,
    jobs: &[Job],
    cache: &Cache,
    progress: &dyn Progress,
) -> Result<Vec<Outcome>> {
    progress.start("retraining", jobs.len() as u64);
    let result = jobs
        .par_iter()
        .map(|job| {
            let outcome = match cache.load(&job.key)? {
                Some(o) => o,
                None => {
                    let o = retrainer.retrain(&job.set, job.seed)?;
                    if o.loss.len() != cache.tests || o.margin.len() != cache.tests {
                        return Err(Error::config(
                            "retrainer",
                            format!(
                                "returned {} test values, expected {}",
                                o.loss.len(),
                                cache.tests
                            ),
                        ));
                    }
                    cache.store(&job.key, &o)?;
                    o
                }
            };
            progress.advance(1);
            Ok(outcome)
        })
        .collect();
    progress.finish();
    result
}
