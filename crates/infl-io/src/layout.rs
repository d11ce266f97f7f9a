//! How checkpoints and feature files pair up: a directory convention or a manifest.
//!
//! **Directory convention** (`--run DIR`): every `NAME.safetensors` in `DIR` is a
//! checkpoint, except files named `NAME.train.safetensors` and `NAME.test.safetensors`,
//! which hold the training and test examples' features at checkpoint `NAME`. Every
//! checkpoint needs its `.train` file; `.test` files are needed for test scores, and then
//! for every checkpoint. Checkpoints are ordered naturally (`checkpoint-2` before
//! `checkpoint-10`).
//!
//! **Manifest** (`--manifest FILE`): a JSON file listing the checkpoints in order, with
//! paths relative to the manifest's folder and an optional learning rate that overrides
//! the checkpoint's metadata:
//! ```json
//! {"checkpoints": [
//!   {"checkpoint": "ckpt-a.safetensors", "train": "a-train.safetensors",
//!    "test": "a-test.safetensors", "learning_rate": 0.1}
//! ]}
//! ```

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Error, Result};

/// One checkpoint and its feature files.
#[derive(Clone, Debug, PartialEq)]
pub struct RunEntry {
    /// The checkpoint (state dict).
    pub checkpoint: PathBuf,
    /// Training examples' features at this checkpoint.
    pub train: PathBuf,
    /// Test examples' features at this checkpoint, if any.
    pub test: Option<PathBuf>,
    /// Learning rate given by a manifest (overrides the checkpoint's metadata).
    pub learning_rate: Option<f32>,
}

/// The checkpoints of a run, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct RunLayout {
    /// Where the layout came from (directory or manifest), for messages.
    pub source: PathBuf,
    /// The checkpoints in training order.
    pub entries: Vec<RunEntry>,
}

impl RunLayout {
    /// Discovers a run in `dir` by the directory convention.
    pub fn discover(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let mut listing = Listing::read(dir)?;
        if listing.checkpoints.is_empty() {
            return Err(Error::layout(
                dir,
                "no checkpoints: expected NAME.safetensors files beside NAME.train.safetensors \
                 feature files",
            ));
        }
        listing.checkpoints.sort_by(|a, b| natural_cmp(a, b));
        listing.check_features(dir)?;
        let Listing {
            checkpoints,
            trains,
            tests,
        } = listing;
        let entries = checkpoints
            .iter()
            .map(|c| {
                if !trains.contains(c) {
                    return Err(Error::layout(
                        dir,
                        format!("checkpoint `{c}.safetensors` has no `{c}.train.safetensors`"),
                    ));
                }
                Ok(RunEntry {
                    checkpoint: dir.join(format!("{c}.safetensors")),
                    train: dir.join(format!("{c}.train.safetensors")),
                    test: tests
                        .contains(c)
                        .then(|| dir.join(format!("{c}.test.safetensors"))),
                    learning_rate: None,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            source: dir.to_path_buf(),
            entries,
        })
    }

    /// Reads a JSON manifest.
    pub fn from_manifest(path: impl AsRef<Path>) -> Result<Self> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Manifest {
            checkpoints: Vec<Entry>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Entry {
            checkpoint: PathBuf,
            train: PathBuf,
            test: Option<PathBuf>,
            learning_rate: Option<f32>,
        }
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let m: Manifest = serde_json::from_str(&text)
            .map_err(|e| Error::layout(path, format!("invalid manifest: {e}")))?;
        if m.checkpoints.is_empty() {
            return Err(Error::layout(path, "the manifest lists no checkpoints"));
        }
        let with_test = m.checkpoints.iter().filter(|e| e.test.is_some()).count();
        if with_test != 0 && with_test != m.checkpoints.len() {
            return Err(Error::layout(
                path,
                "`test` must be given for every checkpoint or for none",
            ));
        }
        for (i, e) in m.checkpoints.iter().enumerate() {
            if let Some(Err(why)) = e.learning_rate.map(crate::check_learning_rate) {
                return Err(Error::layout(
                    path,
                    format!(
                        "checkpoint {i} ({}): learning_rate: {why}",
                        e.checkpoint.display()
                    ),
                ));
            }
        }
        let base = path.parent().unwrap_or(Path::new("."));
        Ok(Self {
            source: path.to_path_buf(),
            entries: m
                .checkpoints
                .into_iter()
                .map(|e| RunEntry {
                    checkpoint: base.join(e.checkpoint),
                    train: base.join(e.train),
                    test: e.test.map(|t| base.join(t)),
                    learning_rate: e.learning_rate,
                })
                .collect(),
        })
    }

    /// True when every checkpoint has test features.
    pub fn has_test(&self) -> bool {
        self.entries.iter().all(|e| e.test.is_some())
    }
}

/// The safetensors files of a run directory by role, as names without their suffixes.
struct Listing {
    /// `NAME.safetensors`.
    checkpoints: Vec<String>,
    /// `NAME.train.safetensors`.
    trains: Vec<String>,
    /// `NAME.test.safetensors`.
    tests: Vec<String>,
}

impl Listing {
    /// Lists the `.safetensors` files of `dir` (other files are ignored).
    fn read(dir: &Path) -> Result<Self> {
        let read = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        let mut listing = Self {
            checkpoints: Vec::new(),
            trains: Vec::new(),
            tests: Vec::new(),
        };
        for entry in read {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".safetensors") else {
                continue;
            };
            if let Some(s) = stem.strip_suffix(".train") {
                listing.trains.push(s.to_string());
            } else if let Some(s) = stem.strip_suffix(".test") {
                listing.tests.push(s.to_string());
            } else {
                listing.checkpoints.push(stem.to_string());
            }
        }
        Ok(listing)
    }

    /// Every feature file has its checkpoint, and test features exist for every
    /// checkpoint or for none.
    fn check_features(&self, dir: &Path) -> Result<()> {
        let checkpoints = &self.checkpoints;
        for orphan in self.trains.iter().chain(&self.tests) {
            if !checkpoints.contains(orphan) {
                return Err(Error::layout(
                    dir,
                    format!("feature file for `{orphan}` has no checkpoint `{orphan}.safetensors`"),
                ));
            }
        }
        if !self.tests.is_empty() && self.tests.len() != checkpoints.len() {
            let missing: Vec<_> = checkpoints
                .iter()
                .filter(|c| !self.tests.contains(c))
                .collect();
            return Err(Error::layout(
                dir,
                format!("test features exist for some checkpoints but not for {missing:?}"),
            ));
        }
        Ok(())
    }
}

/// Natural order: digit runs compare as numbers (`a2` < `a10`), the rest bytewise.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return a.cmp(b),
            (None, _) => return Ordering::Less,
            (_, None) => return Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let dx = x.iter().take_while(|c| c.is_ascii_digit()).count();
                let dy = y.iter().take_while(|c| c.is_ascii_digit()).count();
                let nx = trim_zeros(&x[..dx]);
                let ny = trim_zeros(&y[..dy]);
                let o = nx.len().cmp(&ny.len()).then_with(|| nx.cmp(ny));
                if o != Ordering::Equal {
                    return o;
                }
                x = &x[dx..];
                y = &y[dy..];
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(d);
                }
                x = &x[1..];
                y = &y[1..];
            }
        }
    }
}

fn trim_zeros(s: &[u8]) -> &[u8] {
    let z = s.iter().take_while(|&&c| c == b'0').count();
    &s[z..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut v = vec![
            "checkpoint-10",
            "checkpoint-2",
            "checkpoint-1",
            "checkpoint-02b",
        ];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            vec![
                "checkpoint-1",
                "checkpoint-2",
                "checkpoint-02b",
                "checkpoint-10"
            ]
        );
    }
}
