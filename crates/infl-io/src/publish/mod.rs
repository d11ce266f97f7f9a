//! Publishing result files all-or-nothing, under the rules every subcommand inherits.
//!
//! A [`Publication`] is planned with its destinations and the run's [`Inputs`] before any
//! work is done, so a bad output path fails in milliseconds, not after the scores:
//! - only regular files are ever replaced: never a directory, device, FIFO or socket
//!   (`-o /dev/null` run as root would otherwise replace the device node);
//! - an input is never an output (the same file by device and inode on Unix, by canonical
//!   path elsewhere; a link to an input is the input);
//! - no destination is named twice (`-o` and `--json` on one path);
//! - no `.safetensors` result goes directly into a `--run` folder, where the next run
//!   would take it for a checkpoint.
//!
//! Each file is then staged — written in full to a hidden temporary file `.infl-tmp-*`
//! beside its destination, so that the rename stays on one file system — and
//! [`Publication::publish`] renames all of them into place. If any staging fails, nothing
//! is published and the temporary files are removed; if a rename fails midway, the files
//! already replaced are restored from hard-link backups (on file systems without hard
//! links, from none: the one case that is not all-or-nothing) and new ones removed. Folders
//! the publication created are removed again when it is dropped unpublished.
//!
//! A folder output ([`Publication::plan_folder`]) is published the same way, whole: staged
//! as a hidden temporary folder beside its destination and renamed into place, replacing
//! (with a backup until the set is complete) only a folder that holds nothing but what
//! such an output writes.
//!
//! Every temporary file is registered while it lives; [`remove_temporary_files`] deletes
//! them, for a binary's SIGINT/SIGTERM handler to call before it exits. Publishing holds
//! the registry's lock while it renames, so such a handler waits until the set is
//! complete: an interrupt never leaves a result set half-published.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tempfile::TempPath;

use crate::{Error, Result, RunLayout};

mod folder;

pub use folder::{FolderContent, StagedFolder};
use folder::{InstalledFolder, PlannedFolder, StagedFolderEntry};

/// Prefix of every temporary file infl writes (hidden, and easy to recognise).
pub const TEMP_PREFIX: &str = ".infl-tmp-";

/// The temporary files alive in this process.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

type Live = MutexGuard<'static, Vec<PathBuf>>;

fn live() -> Live {
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Deletes every temporary file this process has staged and not yet published, and keeps
/// the registry locked for good, so that no thread stages or publishes afterwards: call it
/// only on the way out (a signal handler, then `exit`). Returns how many files it removed.
pub fn remove_temporary_files() -> usize {
    let mut live = live();
    let removed = live
        .drain(..)
        .filter(|p| std::fs::remove_file(p).is_ok() || std::fs::remove_dir_all(p).is_ok())
        .count();
    std::mem::forget(live);
    removed
}

/// A registered temporary file, deleted (and unregistered) when dropped.
#[derive(Debug)]
struct Temp(Option<TempPath>);

impl Temp {
    fn register(path: TempPath, live: &mut Live) -> Self {
        live.push(path.to_path_buf());
        Self(Some(path))
    }

    /// Creates an empty temporary file in `dir`, its name ending in `suffix`.
    fn create_in(dir: &Path, suffix: &str) -> std::io::Result<(std::fs::File, Self)> {
        let mut live = live();
        let (file, path) = builder().suffix(suffix).tempfile_in(dir)?.into_parts();
        Ok((file, Self::register(path, &mut live)))
    }

    /// A second name (hard link) for `path`, beside it.
    fn link_to(path: &Path, live: &mut Live) -> std::io::Result<Self> {
        let dir = parent_of(path);
        let made = builder().make_in(dir, |tmp| std::fs::hard_link(path, tmp))?;
        Ok(Self::register(made.into_temp_path(), live))
    }

    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }

    /// Renames the file to `dest`; it is no longer temporary.
    fn rename_to(mut self, dest: &Path, live: &mut Live) -> std::io::Result<()> {
        let Some(path) = self.0.take() else {
            return Ok(());
        };
        unregister(live, &path);
        path.persist(dest).map_err(|e| {
            let _ = e.path.close();
            e.error
        })
    }

    /// Deletes the file now, under the lock the caller holds.
    fn discard(mut self, live: &mut Live) {
        if let Some(path) = self.0.take() {
            unregister(live, &path);
            let _ = path.close();
        }
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            unregister(&mut live(), &path);
            let _ = path.close();
        }
    }
}

fn unregister(live: &mut Live, path: &Path) {
    if let Some(i) = live.iter().position(|p| p == path) {
        live.swap_remove(i);
    }
}

fn builder() -> tempfile::Builder<'static, 'static> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(TEMP_PREFIX);
    // Temp files are created 0600; results are ordinary files (0644).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o644));
    }
    builder
}

fn parent_of(path: &Path) -> &Path {
    path.parent().map_or(Path::new("."), nonempty_or_dot)
}

fn nonempty_or_dot(path: &Path) -> &Path {
    if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    }
}

/// What a run reads, which its outputs must leave alone.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    files: Vec<PathBuf>,
    run_folder: Option<PathBuf>,
}

impl Inputs {
    /// No inputs to protect (a plain file write).
    pub fn none() -> Self {
        Self::default()
    }

    /// These files.
    pub fn files(files: impl IntoIterator<Item = PathBuf>) -> Self {
        Self {
            files: files.into_iter().collect(),
            run_folder: None,
        }
    }

    /// Every file of a run (checkpoints, feature files, the manifest), and the run folder
    /// when the run was discovered from one.
    pub fn of_run(layout: &RunLayout) -> Self {
        let mut files: Vec<PathBuf> = layout
            .entries
            .iter()
            .flat_map(|e| [Some(&e.checkpoint), Some(&e.train), e.test.as_ref()])
            .flatten()
            .cloned()
            .collect();
        let folder = layout.source.is_dir().then(|| layout.source.clone());
        if folder.is_none() {
            files.push(layout.source.clone());
        }
        Self {
            files,
            run_folder: folder,
        }
    }
}

impl Inputs {
    /// These inputs and `files` too (e.g. an index read by a query).
    pub fn and_files(mut self, files: impl IntoIterator<Item = PathBuf>) -> Self {
        self.files.extend(files);
        self
    }

    /// Every file of a factor run, and its folder (where a `.safetensors` result could be
    /// taken for a factor file).
    pub fn of_factors(run: &crate::FactorRun) -> Self {
        Self {
            files: run
                .entries
                .iter()
                .flat_map(|e| std::iter::once(&e.train).chain(&e.test))
                .cloned()
                .collect(),
            run_folder: Some(run.source.clone()),
        }
    }
}

/// The identity of an existing file: device and inode on Unix, the canonical path elsewhere.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileId(#[cfg(unix)] (u64, u64), #[cfg(not(unix))] PathBuf);

impl FileId {
    fn of(path: &Path) -> Option<Self> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(path).ok()?;
            Some(Self((m.dev(), m.ino())))
        }
        #[cfg(not(unix))]
        {
            path.canonicalize().ok().map(Self)
        }
    }
}

/// Where a destination really is: its folder's canonical path (of the nearest existing
/// ancestor, with the rest appended) and its name.
fn location(path: &Path) -> PathBuf {
    folders(path)
        .find_map(|d| Some((d, d.canonicalize().ok()?)))
        .map(|(dir, canonical)| canonical.join(path.strip_prefix(dir).unwrap_or(path)))
        .unwrap_or_else(|| path.to_path_buf())
}

fn refused(path: &Path, why: impl Into<String>) -> Error {
    Error::io(
        path,
        std::io::Error::new(std::io::ErrorKind::InvalidInput, why.into()),
    )
}

/// What kind of file is at `path` when it is not a regular one.
fn not_regular(path: &Path) -> Option<&'static str> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_file() {
        None
    } else if meta.is_dir() {
        Some("a directory")
    } else {
        Some("a special file (FIFO, socket or device)")
    }
}

/// `path`'s folder and its ancestors, nearest first (`.` for the empty one).
fn folders(path: &Path) -> impl Iterator<Item = &Path> {
    parent_of(path).ancestors().map(nonempty_or_dot)
}

/// The first existing ancestor of `path` must be a folder.
fn check_folder_chain(path: &Path) -> Result<()> {
    match folders(path).find_map(|d| std::fs::metadata(d).ok().map(|m| (d, m))) {
        Some((dir, m)) if !m.is_dir() => Err(refused(
            path,
            format!("cannot be written: {} is not a folder", dir.display()),
        )),
        _ => Ok(()),
    }
}

/// A destination, checked.
#[derive(Debug)]
struct Planned {
    path: PathBuf,
    location: PathBuf,
}

/// A destination with its content written to a temporary file beside it.
#[derive(Debug)]
struct Staged {
    tmp: Temp,
    dest: PathBuf,
}

/// A file being staged in pieces ([`Publication::stage_file`]): a temporary file beside
/// its destination, written and sought through [`file`](Self::file).
#[derive(Debug)]
pub struct StagedFile {
    file: std::fs::File,
    tmp: Temp,
    dest: PathBuf,
}

impl StagedFile {
    /// The temporary file, to write, seek and read back.
    pub fn file(&mut self) -> &mut std::fs::File {
        &mut self.file
    }

    /// The destination (for messages).
    pub fn dest(&self) -> &Path {
        &self.dest
    }
}

/// A destination replaced, with the old file's backup until the set is complete.
struct Installed {
    dest: PathBuf,
    existed: bool,
    backup: Option<Temp>,
}

/// A set of result files published together (see the module docs for the rules).
#[derive(Debug)]
pub struct Publication {
    planned: Vec<Planned>,
    staged: Vec<Staged>,
    created: Vec<PathBuf>,
    /// The inputs' identities (for folder outputs planned later).
    protected: Vec<(FileId, PathBuf)>,
    folders: Vec<PlannedFolder>,
    staged_folders: Vec<StagedFolderEntry>,
}

impl Publication {
    /// Checks every destination against the rules before anything is written.
    pub fn plan<P: AsRef<Path>>(
        inputs: &Inputs,
        outputs: impl IntoIterator<Item = P>,
    ) -> Result<Self> {
        let protected: Vec<(FileId, PathBuf)> = inputs
            .files
            .iter()
            .filter_map(|f| FileId::of(f).map(|id| (id, f.clone())))
            .collect();
        let run_folder = inputs
            .run_folder
            .as_deref()
            .and_then(|d| d.canonicalize().ok());
        let mut planned: Vec<Planned> = Vec::new();
        for out in outputs {
            let path = out.as_ref();
            if let Some(kind) = not_regular(path) {
                return Err(refused(
                    path,
                    format!("refusing to replace {kind}: outputs only ever replace regular files"),
                ));
            }
            check_folder_chain(path)?;
            let id = FileId::of(path);
            if let Some((_, input)) = protected.iter().find(|(p, _)| Some(p) == id.as_ref()) {
                return Err(refused(
                    path,
                    format!(
                        "is an input of this run ({}): outputs never replace inputs",
                        input.display()
                    ),
                ));
            }
            let location = location(path);
            let is_tensors = path.extension().is_some_and(|e| e == "safetensors");
            if let Some(folder) = run_folder.as_deref().filter(|_| is_tensors)
                && location.parent() == Some(folder)
            {
                return Err(refused(
                    path,
                    format!(
                        "a .safetensors result inside the run folder {} would be taken for a \
                         checkpoint by the next run: write it elsewhere",
                        folder.display()
                    ),
                ));
            }
            if let Some(other) = planned
                .iter()
                .find(|p| p.location == location || (id.is_some() && FileId::of(&p.path) == id))
            {
                return Err(refused(
                    path,
                    format!(
                        "the same file is named for two outputs (also as {})",
                        other.path.display()
                    ),
                ));
            }
            planned.push(Planned {
                path: path.to_path_buf(),
                location,
            });
        }
        Ok(Self {
            planned,
            staged: Vec::new(),
            created: Vec::new(),
            protected,
            folders: Vec::new(),
            staged_folders: Vec::new(),
        })
    }

    /// Stages `bytes` for the planned destination `dest`.
    pub fn stage(&mut self, dest: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
        self.stage_with(dest, |w| w.write_all(bytes))
    }

    /// Stages content streamed by `f` for the planned destination `dest`.
    pub fn stage_with(
        &mut self,
        dest: impl AsRef<Path>,
        f: impl FnOnce(&mut std::io::BufWriter<&mut std::fs::File>) -> std::io::Result<()>,
    ) -> Result<()> {
        let dest = self.planned_path(dest.as_ref())?;
        self.create_folders(&dest)?;
        let (mut file, tmp) =
            Temp::create_in(parent_of(&dest), "").map_err(|e| Error::io(&dest, e))?;
        let mut w = std::io::BufWriter::new(&mut file);
        f(&mut w)
            .and_then(|()| w.flush())
            .map_err(|e| Error::io(&dest, e))?;
        self.staged.push(Staged { tmp, dest });
        Ok(())
    }

    /// Starts staging `dest` as a file written in pieces — appended, or patched in place
    /// (a header whose checksum is known only at the end) — for content that a closure
    /// cannot produce in one go. Hand it back with [`finish_file`](Self::finish_file) once
    /// complete; dropped before that, its temporary file is removed and nothing is staged.
    pub fn stage_file(&mut self, dest: impl AsRef<Path>) -> Result<StagedFile> {
        let dest = self.planned_path(dest.as_ref())?;
        self.create_folders(&dest)?;
        let (file, tmp) = Temp::create_in(parent_of(&dest), "").map_err(|e| Error::io(&dest, e))?;
        Ok(StagedFile { file, tmp, dest })
    }

    /// Stages a file written through [`stage_file`](Self::stage_file), once it is complete.
    pub fn finish_file(&mut self, mut staged: StagedFile) -> Result<()> {
        staged
            .file
            .flush()
            .map_err(|e| Error::io(&staged.dest, e))?;
        self.staged.push(Staged {
            tmp: staged.tmp,
            dest: staged.dest,
        });
        Ok(())
    }

    /// Stages a file that `f` writes at the path it is given (for writers that want a
    /// path, such as image encoders; the path ends in the destination's extension, for
    /// those that choose the format by it).
    pub fn stage_path(
        &mut self,
        dest: impl AsRef<Path>,
        f: impl FnOnce(&Path) -> std::io::Result<()>,
    ) -> Result<()> {
        let dest = self.planned_path(dest.as_ref())?;
        self.create_folders(&dest)?;
        let suffix = dest
            .extension()
            .map(|e| format!(".{}", e.to_string_lossy()))
            .unwrap_or_default();
        let (file, tmp) =
            Temp::create_in(parent_of(&dest), &suffix).map_err(|e| Error::io(&dest, e))?;
        drop(file);
        f(tmp.path()).map_err(|e| Error::io(&dest, e))?;
        self.staged.push(Staged { tmp, dest });
        Ok(())
    }

    /// Stages tensors (and string metadata) as a safetensors file with a canonical header.
    pub fn stage_safetensors(
        &mut self,
        dest: impl AsRef<Path>,
        tensors: Vec<(String, crate::OutTensor)>,
        metadata: std::collections::HashMap<String, String>,
    ) -> Result<()> {
        let bytes = crate::write::safetensors_bytes(dest.as_ref(), tensors, metadata)?;
        self.stage(dest, &bytes)
    }

    /// Renames every staged file (then folder) into place, all or none. Holds the
    /// temporary-file registry's lock throughout, so a signal handler waits for the set to
    /// be complete.
    pub fn publish(mut self) -> Result<()> {
        let missing = (self.planned.iter())
            .map(|p| &p.path)
            .find(|p| !self.staged.iter().any(|s| &s.dest == *p))
            .or_else(|| {
                (self.folders.iter())
                    .map(|f| &f.path)
                    .find(|p| !self.staged_folders.iter().any(|s| &s.dest == *p))
            });
        if let Some(missing) = missing {
            return Err(refused(missing, "planned as an output but never written"));
        }
        let mut live = live();
        let mut staged = std::mem::take(&mut self.staged).into_iter();
        let mut folders = std::mem::take(&mut self.staged_folders).into_iter();
        let (mut installed, mut installed_folders) = (Vec::new(), Vec::new());
        let mut failure = None;
        for s in staged.by_ref() {
            match install(s, &mut live) {
                Ok(i) => installed.push(i),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if failure.is_none() {
            for f in folders.by_ref() {
                match f.install(&mut live) {
                    Ok(i) => installed_folders.push(i),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
        }
        if let Some(e) = failure {
            staged.for_each(|s| s.tmp.discard(&mut live));
            folders.for_each(|f| f.discard(&mut live));
            (installed_folders.into_iter().rev()).for_each(|i| i.undo(&mut live));
            installed.into_iter().rev().for_each(|i| undo(i, &mut live));
            return Err(e);
        }
        for i in installed {
            if let Some(b) = i.backup {
                b.discard(&mut live);
            }
        }
        installed_folders
            .into_iter()
            .for_each(|i| InstalledFolder::keep(i, &mut live));
        self.created.clear();
        Ok(())
    }

    fn planned_path(&self, dest: &Path) -> Result<PathBuf> {
        self.planned
            .iter()
            .find(|p| p.path == dest)
            .map(|p| p.path.clone())
            .ok_or_else(|| refused(dest, "not planned as an output of this publication"))
    }

    /// Creates `dest`'s missing folders, remembering them for removal on failure.
    fn create_folders(&mut self, dest: &Path) -> Result<()> {
        let missing: Vec<PathBuf> = folders(dest)
            .take_while(|d| !d.exists())
            .map(Path::to_path_buf)
            .collect();
        for d in missing.into_iter().rev() {
            std::fs::create_dir(&d)
                .map_err(|e| Error::io(&d, e))
                .map_err(|e| refused(dest, format!("cannot create its folder: {e}")))?;
            self.created.push(d);
        }
        Ok(())
    }
}

impl Drop for Publication {
    /// Unpublished: temporary files go, then the folders this publication created.
    fn drop(&mut self) {
        self.staged.clear();
        self.staged_folders.clear();
        for d in self.created.drain(..).rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Renames one staged file into place, keeping a hard-link backup of what it replaces.
fn install(s: Staged, live: &mut Live) -> Result<Installed> {
    if let Some(kind) = not_regular(&s.dest) {
        s.tmp.discard(live);
        return Err(refused(
            &s.dest,
            format!("refusing to replace {kind}: outputs only ever replace regular files"),
        ));
    }
    let existed = std::fs::symlink_metadata(&s.dest).is_ok();
    let backup = existed.then(|| Temp::link_to(&s.dest, live).ok()).flatten();
    match s.tmp.rename_to(&s.dest, live) {
        Ok(()) => Ok(Installed {
            dest: s.dest,
            existed,
            backup,
        }),
        Err(e) => {
            if let Some(b) = backup {
                b.discard(live);
            }
            Err(Error::io(&s.dest, e))
        }
    }
}

/// Puts back what `i` replaced, or removes what it created. (A replaced file without a
/// backup — no hard links there — cannot be put back and stays new.)
fn undo(i: Installed, live: &mut Live) {
    match (i.backup, i.existed) {
        (Some(b), _) => {
            let _ = b.rename_to(&i.dest, live);
        }
        (None, false) => {
            let _ = std::fs::remove_file(&i.dest);
        }
        (None, true) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn message(e: Error) -> String {
        e.to_string()
    }

    #[test]
    fn a_set_is_published_whole_or_not_at_all() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a.txt"), dir.path().join("b.txt"));
        std::fs::write(&a, "old a").expect("seed");
        // Staging fails for b: nothing is published, a keeps its old content.
        let mut p = Publication::plan(&Inputs::none(), [&a, &b]).expect("plan");
        p.stage(&a, b"new a").expect("stage a");
        let err = p
            .stage_with(&b, |_| Err(std::io::Error::other("disk full")))
            .expect_err("b fails");
        assert!(message(err).contains("disk full"));
        drop(p);
        assert_eq!(names(dir.path()), ["a.txt"]);
        assert_eq!(std::fs::read(&a).expect("a"), b"old a");
        // A rename that fails midway (b became a directory after planning) puts a back.
        let mut p = Publication::plan(&Inputs::none(), [&a, &b]).expect("plan");
        p.stage(&a, b"new a").expect("stage a");
        p.stage(&b, b"new b").expect("stage b");
        std::fs::create_dir(&b).expect("mkdir b");
        let err = p.publish().expect_err("b is a directory now");
        assert!(message(err).contains("regular files"));
        assert_eq!(names(dir.path()), ["a.txt", "b.txt"]);
        assert_eq!(std::fs::read(&a).expect("a"), b"old a");
        std::fs::remove_dir(&b).expect("rmdir");
        // And when all goes well, both are there and nothing else.
        let mut p = Publication::plan(&Inputs::none(), [&a, &b]).expect("plan");
        p.stage(&a, b"new a").expect("stage a");
        p.stage(&b, b"new b").expect("stage b");
        p.publish().expect("publish");
        assert_eq!(names(dir.path()), ["a.txt", "b.txt"]);
        assert_eq!(std::fs::read(&a).expect("a"), b"new a");
        assert!(live().iter().all(|p| !p.starts_with(dir.path())));
    }

    #[test]
    fn unpublished_sets_leave_no_folder_and_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("new/deeper/x.bin");
        let mut p = Publication::plan(&Inputs::none(), [&out]).expect("plan");
        assert!(!dir.path().join("new").exists(), "planning writes nothing");
        p.stage(&out, b"x").expect("stage");
        assert_eq!(names(&dir.path().join("new/deeper")).len(), 1);
        drop(p);
        assert!(names(dir.path()).is_empty());
        let mut p = Publication::plan(&Inputs::none(), [&out]).expect("plan");
        p.stage(&out, b"x").expect("stage");
        p.publish().expect("publish");
        assert_eq!(std::fs::read(&out).expect("out"), b"x");
    }

    #[test]
    fn files_staged_in_pieces_are_published_or_removed() {
        use std::io::{Seek, SeekFrom};
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("sub/a.bin"), dir.path().join("sub/b.bin"));
        let mut p = Publication::plan(&Inputs::none(), [&a, &b]).expect("plan");
        let mut f = p.stage_file(&a).expect("stage a");
        f.file().write_all(b"00-body").expect("write");
        f.file().seek(SeekFrom::Start(0)).expect("seek");
        f.file().write_all(b"42").expect("patch");
        assert_eq!(f.dest(), a);
        p.finish_file(f).expect("finish a");
        // Dropped unfinished: its temporary file goes, and the set is incomplete.
        drop(p.stage_file(&b).expect("stage b"));
        assert_eq!(names(&dir.path().join("sub")).len(), 1);
        let err = p.publish().expect_err("b was never finished");
        assert!(message(err).contains("never written"));
        assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
        let mut p = Publication::plan(&Inputs::none(), [&a]).expect("plan");
        let mut f = p.stage_file(&a).expect("stage a");
        f.file().write_all(b"42-body").expect("write");
        p.finish_file(f).expect("finish");
        p.publish().expect("publish");
        assert_eq!(std::fs::read(&a).expect("a"), b"42-body");
        assert_eq!(names(&dir.path().join("sub")), ["a.bin"]);
    }

    #[test]
    fn only_regular_files_are_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = Publication::plan(&Inputs::none(), [dir.path()]).expect_err("a folder");
        assert!(message(err).contains("refusing to replace a directory"));
        #[cfg(unix)]
        {
            let err = Publication::plan(&Inputs::none(), ["/dev/null"]).expect_err("a device");
            assert!(message(err).contains("special file"));
        }
        let file = dir.path().join("f");
        std::fs::write(&file, "x").expect("seed");
        let err =
            Publication::plan(&Inputs::none(), [file.join("out.bin")]).expect_err("under a file");
        assert!(message(err).contains("is not a folder"));
    }

    #[test]
    fn inputs_are_never_outputs_and_no_file_is_named_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let input = dir.path().join("in.safetensors");
        std::fs::write(&input, "x").expect("seed");
        let inputs = Inputs::files([input.clone()]);
        let err = Publication::plan(&inputs, [&input]).expect_err("input");
        assert!(message(err).contains("is an input"));
        // Another spelling of the same file is the same file.
        let other = dir.path().join(".").join("in.safetensors");
        assert!(Publication::plan(&inputs, [&other]).is_err());
        #[cfg(unix)]
        {
            let link = dir.path().join("link");
            std::os::unix::fs::symlink(&input, &link).expect("symlink");
            assert!(
                Publication::plan(&inputs, [&link]).is_err(),
                "a link to an input"
            );
        }
        let out = dir.path().join("out.json");
        let again = dir.path().join("sub/../out.json");
        let cwd = std::env::current_dir().expect("cwd");
        Publication::plan(&inputs, ["rel.json", "./rel.json"]).expect_err("relative, twice");
        Publication::plan(&inputs, [cwd.join("rel.json"), "rel.json".into()])
            .expect_err("absolute and relative");
        std::fs::create_dir(dir.path().join("sub")).expect("sub");
        let err = Publication::plan(&inputs, [&out, &again]).expect_err("twice");
        assert!(message(err).contains("the same file is named for two outputs"));
        assert_eq!(std::fs::read(&input).expect("input"), b"x");
    }

    #[test]
    fn no_tensors_are_written_into_a_run_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inputs = Inputs {
            files: Vec::new(),
            run_folder: Some(dir.path().to_path_buf()),
        };
        let err = Publication::plan(&inputs, [dir.path().join("scores.safetensors")])
            .expect_err("inside");
        assert!(message(err).contains("inside the run folder"));
        Publication::plan(&inputs, [dir.path().join("topk.json")]).expect("json is fine");
        Publication::plan(&inputs, [dir.path().join("sub/scores.safetensors")])
            .expect("a sub-folder is fine");
    }

    #[test]
    fn removing_temporary_files_removes_what_is_staged() {
        // In a child process: the registry stays locked afterwards by design.
        if std::env::var_os("INFL_PUBLISH_CHILD").is_none() {
            let dir = tempfile::tempdir().expect("tempdir");
            let status = std::process::Command::new(std::env::current_exe().expect("exe"))
                .args([
                    "--exact",
                    "publish::tests::removing_temporary_files_removes_what_is_staged",
                    "--nocapture",
                ])
                .env("INFL_PUBLISH_CHILD", dir.path())
                .status()
                .expect("child");
            assert!(status.success());
            assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
            return;
        }
        let dir = PathBuf::from(std::env::var_os("INFL_PUBLISH_CHILD").expect("dir"));
        let out = dir.join("x.bin");
        let mut p = Publication::plan(&Inputs::none(), [&out]).expect("plan");
        p.stage(&out, b"x").expect("stage");
        assert_eq!(names(&dir).len(), 1);
        assert_eq!(remove_temporary_files(), 1);
        std::mem::forget(p);
        std::process::exit(0);
    }
}
