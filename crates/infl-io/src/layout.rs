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
use std::ffi::{OsStr, OsString};
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
        listing
            .checkpoints
            .sort_by(|a, b| natural_cmp_bytes(a.as_encoded_bytes(), b.as_encoded_bytes()));
        listing.check_features(dir)?;
        let entries = listing
            .checkpoints
            .iter()
            .map(|c| listing.entry(dir, c))
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
        crate::write::require_regular_file(path)?;
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        // A byte-order mark (as some Windows editors write) is not JSON; skip it.
        let json = text.strip_prefix('\u{feff}').unwrap_or(&text);
        // The error names the field (`checkpoints[0].learning_rate: invalid type ...`).
        let m: Manifest =
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(json))
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
/// Names are kept as the OS gives them (they need not be UTF-8) and shown lossily.
struct Listing {
    /// `NAME.safetensors`.
    checkpoints: Vec<OsString>,
    /// `NAME.train.safetensors`.
    trains: Vec<OsString>,
    /// `NAME.test.safetensors`.
    tests: Vec<OsString>,
}

/// The role of a `.safetensors` file in a run directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Checkpoint,
    Train,
    Test,
}

impl Role {
    /// The suffix after `NAME`.
    fn suffix(self) -> &'static str {
        match self {
            Role::Checkpoint => ".safetensors",
            Role::Train => ".train.safetensors",
            Role::Test => ".test.safetensors",
        }
    }

    /// The role and `NAME` of file `name`, or `None` for a file that is not safetensors.
    fn of(name: &OsStr) -> Option<(Role, OsString)> {
        let name = Path::new(name);
        if name.extension()? != "safetensors" {
            return None;
        }
        let stem = Path::new(name.file_stem()?);
        let role = match stem.extension() {
            Some(e) if e == "train" => Role::Train,
            Some(e) if e == "test" => Role::Test,
            _ => return Some((Role::Checkpoint, stem.as_os_str().to_owned())),
        };
        Some((role, stem.file_stem()?.to_owned()))
    }

    /// The path of `NAME`'s file of this role in `dir`.
    fn path(self, dir: &Path, name: &OsStr) -> PathBuf {
        let mut file = name.to_owned();
        file.push(self.suffix());
        dir.join(file)
    }
}

/// `NAME` followed by a role's suffix, for messages.
fn shown(name: &OsStr, role: Role) -> String {
    format!("{}{}", name.to_string_lossy(), role.suffix())
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
            let Some((role, stem)) = Role::of(&entry.file_name()) else {
                continue;
            };
            match role {
                Role::Checkpoint => listing.checkpoints.push(stem),
                Role::Train => listing.trains.push(stem),
                Role::Test => listing.tests.push(stem),
            }
        }
        Ok(listing)
    }

    /// Checkpoint `c`'s entry: it needs its `.train` file.
    fn entry(&self, dir: &Path, c: &OsStr) -> Result<RunEntry> {
        if !self.trains.iter().any(|t| t == c) {
            return Err(Error::layout(
                dir,
                format!(
                    "checkpoint `{}` has no `{}`",
                    shown(c, Role::Checkpoint),
                    shown(c, Role::Train)
                ),
            ));
        }
        let has_test = self.tests.iter().any(|t| t == c);
        Ok(RunEntry {
            checkpoint: Role::Checkpoint.path(dir, c),
            train: Role::Train.path(dir, c),
            test: has_test.then(|| Role::Test.path(dir, c)),
            learning_rate: None,
        })
    }

    /// Every feature file has its checkpoint, and test features exist for every
    /// checkpoint or for none.
    fn check_features(&self, dir: &Path) -> Result<()> {
        let checkpoints = &self.checkpoints;
        for orphan in self.trains.iter().chain(&self.tests) {
            if !checkpoints.contains(orphan) {
                return Err(Error::layout(
                    dir,
                    format!(
                        "feature file for `{}` has no checkpoint `{}`",
                        orphan.to_string_lossy(),
                        shown(orphan, Role::Checkpoint)
                    ),
                ));
            }
        }
        if !self.tests.is_empty() && self.tests.len() != checkpoints.len() {
            let missing: Vec<_> = checkpoints
                .iter()
                .filter(|c| !self.tests.contains(c))
                .map(|c| c.to_string_lossy())
                .collect();
            return Err(Error::layout(
                dir,
                format!("test features exist for some checkpoints but not for {missing:?}"),
            ));
        }
        Ok(())
    }
}

impl crate::FactorRun {
    /// Discovers a factor folder: `NAME.train.safetensors` for every checkpoint `NAME`,
    /// and `NAME.test.safetensors` for every one or none (see [`crate::factors`]).
    pub fn discover(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let mut listing = Listing::read(dir)?;
        if listing.trains.is_empty() {
            return Err(Error::layout(
                dir,
                "no factor files: expected NAME.train.safetensors (and NAME.test.safetensors) \
                 for every checkpoint NAME",
            ));
        }
        listing
            .trains
            .sort_by(|a, b| natural_cmp_bytes(a.as_encoded_bytes(), b.as_encoded_bytes()));
        if let Some(orphan) = listing.tests.iter().find(|t| !listing.trains.contains(t)) {
            return Err(Error::layout(
                dir,
                format!(
                    "`{}` has no `{}`",
                    shown(orphan, Role::Test),
                    shown(orphan, Role::Train)
                ),
            ));
        }
        if !listing.tests.is_empty() && listing.tests.len() != listing.trains.len() {
            let missing: Vec<_> = listing
                .trains
                .iter()
                .filter(|c| !listing.tests.contains(c))
                .map(|c| c.to_string_lossy())
                .collect();
            return Err(Error::layout(
                dir,
                format!("test factors exist for some checkpoints but not for {missing:?}"),
            ));
        }
        let has_test = !listing.tests.is_empty();
        Ok(Self {
            source: dir.to_path_buf(),
            entries: listing
                .trains
                .iter()
                .map(|c| crate::FactorEntry {
                    name: c.to_string_lossy().into_owned(),
                    train: Role::Train.path(dir, c),
                    test: has_test.then(|| Role::Test.path(dir, c)),
                })
                .collect(),
        })
    }
}

/// Natural order: digit runs compare as numbers (`a2` < `a10`), the rest bytewise.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    natural_cmp_bytes(a.as_bytes(), b.as_bytes())
}

/// [`natural_cmp`] on bytes (file names that need not be UTF-8).
fn natural_cmp_bytes(a: &[u8], b: &[u8]) -> Ordering {
    let (mut x, mut y) = (a, b);
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
