//! Folder outputs: a folder of files published whole (a plot per test example), under the
//! rules of the module docs. The folder is staged as a hidden temporary folder beside its
//! destination and renamed into place, so it is complete or absent, and never a mixture of
//! this run's files and an earlier run's.
//!
//! The destination may be new, an empty folder, or a folder holding only regular files
//! that [`FolderContent::accepts`] (what an earlier run of the same output wrote): such a
//! folder is replaced whole, kept as a backup until the set is complete. Anything else in
//! it — another file, a sub-folder, a link, an input of the run — is refused at planning,
//! before any work, and checked again just before the rename.

use std::path::{Path, PathBuf};

use super::{
    FileId, Live, Publication, builder, check_folder_chain, location, parent_of, refused,
    unregister,
};
use crate::{Error, Result};

/// What a folder output may replace (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct FolderContent {
    /// The output's own file names, for messages (e.g. `test-*.png`).
    pub describe: &'static str,
    /// Whether a file name is one the output writes.
    pub accepts: fn(&str) -> bool,
}

/// A folder output, checked.
#[derive(Debug)]
pub(super) struct PlannedFolder {
    pub(super) path: PathBuf,
    location: PathBuf,
    content: FolderContent,
}

/// A registered temporary folder, removed with its content (and unregistered) when dropped.
#[derive(Debug)]
struct TempFolder(Option<PathBuf>);

impl TempFolder {
    /// A new empty folder beside `dest`, registered in `live`.
    fn beside(dest: &Path, live: &mut Live) -> std::io::Result<Self> {
        let mut b = builder();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            b.permissions(std::fs::Permissions::from_mode(0o755));
        }
        let path = b.tempdir_in(parent_of(dest))?.keep();
        live.push(path.clone());
        Ok(Self(Some(path)))
    }

    /// `dest` moved to a new temporary name beside it (a backup), registered in `live`.
    fn move_aside(dest: &Path, live: &mut Live) -> std::io::Result<Self> {
        let name = Self::beside(dest, live)?;
        // A folder is renamed onto a free name (not onto an empty folder, which only POSIX
        // systems allow).
        std::fs::remove_dir(name.path())?;
        std::fs::rename(dest, name.path())?;
        Ok(name)
    }

    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }

    /// Renames the folder to `dest` (absent, or an empty folder); it is no longer temporary.
    fn rename_to(mut self, dest: &Path, live: &mut Live) -> std::io::Result<()> {
        let Some(path) = self.0.take() else {
            return Ok(());
        };
        match std::fs::rename(&path, dest) {
            Ok(()) => {
                unregister(live, &path);
                Ok(())
            }
            Err(e) => {
                self.0 = Some(path);
                Err(e)
            }
        }
    }

    /// Removes the folder now, under the lock the caller holds.
    fn discard(mut self, live: &mut Live) {
        if let Some(path) = self.0.take() {
            unregister(live, &path);
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

impl Drop for TempFolder {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            unregister(&mut super::live(), &path);
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

/// A folder output being staged: write its files into [`path`](Self::path), then hand it
/// back with [`Publication::finish_folder`]. Dropped before that, it is removed and nothing
/// is staged.
#[derive(Debug)]
pub struct StagedFolder {
    tmp: TempFolder,
    dest: PathBuf,
}

impl StagedFolder {
    /// The temporary folder to write the files into.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// The destination (for messages).
    pub fn dest(&self) -> &Path {
        &self.dest
    }
}

/// A folder staged in full.
#[derive(Debug)]
pub(super) struct StagedFolderEntry {
    tmp: TempFolder,
    pub(super) dest: PathBuf,
    content: FolderContent,
}

/// A folder renamed into place, with the folder it replaced until the set is complete.
pub(super) struct InstalledFolder {
    dest: PathBuf,
    backup: Option<TempFolder>,
}

/// Why the existing `path` cannot be replaced by a folder output of `content`, if it
/// cannot: not a folder, or holding something the output does not write (or an input).
fn not_replaceable(
    path: &Path,
    content: FolderContent,
    protected: &[(FileId, PathBuf)],
) -> Option<String> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_dir() {
        let kind = if meta.file_type().is_symlink() {
            "a link"
        } else if meta.is_file() {
            "a file"
        } else {
            "a special file (FIFO, socket or device)"
        };
        return Some(format!(
            "refusing to replace {kind}: this output is a folder, and replaces only a folder"
        ));
    }
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) => return Some(format!("cannot read the folder: {e}")),
    };
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => return Some(format!("cannot read the folder: {e}")),
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        let regular = entry.file_type().is_ok_and(|t| t.is_file());
        let id = FileId::of(&entry.path());
        if let Some((_, input)) = protected.iter().find(|(p, _)| Some(p) == id.as_ref()) {
            return Some(format!(
                "holds {name}, an input of this run ({}): outputs never replace inputs",
                input.display()
            ));
        }
        if !regular || !(content.accepts)(&name) {
            return Some(format!(
                "holds {name}, which this output does not write: it replaces a folder whole, so \
                 the folder must be new, empty, or hold only its own files ({}); remove it or \
                 choose another",
                content.describe
            ));
        }
    }
    None
}

impl Publication {
    /// Plans `dir` as a folder output published whole (see the module docs): refused when
    /// it exists and is not a folder, or holds anything `content` does not accept, and when
    /// it is, or holds, another output of this publication.
    pub fn plan_folder(&mut self, dir: impl AsRef<Path>, content: FolderContent) -> Result<()> {
        let path = dir.as_ref();
        check_folder_chain(path)?;
        if let Some(why) = not_replaceable(path, content, &self.protected) {
            return Err(refused(path, why));
        }
        let at = location(path);
        let inside = (self.planned.iter().map(|p| (&p.path, &p.location)))
            .chain(self.folders.iter().map(|f| (&f.path, &f.location)))
            .find(|(_, l)| l.starts_with(&at) || at.starts_with(l));
        if let Some((other, _)) = inside {
            return Err(refused(
                path,
                format!(
                    "a folder output may not hold (or lie in) another output ({})",
                    other.display()
                ),
            ));
        }
        self.folders.push(PlannedFolder {
            path: path.to_path_buf(),
            location: at,
            content,
        });
        Ok(())
    }

    /// Starts staging the planned folder `dir`: an empty temporary folder beside it.
    pub fn stage_folder(&mut self, dir: impl AsRef<Path>) -> Result<StagedFolder> {
        let dest = dir.as_ref();
        if !self.folders.iter().any(|f| f.path == dest) {
            return Err(refused(dest, "not planned as a folder of this publication"));
        }
        self.create_folders(dest)?;
        let tmp = TempFolder::beside(dest, &mut super::live()).map_err(|e| Error::io(dest, e))?;
        Ok(StagedFolder {
            tmp,
            dest: dest.to_path_buf(),
        })
    }

    /// Stages a folder written through [`stage_folder`](Self::stage_folder), once complete.
    pub fn finish_folder(&mut self, staged: StagedFolder) -> Result<()> {
        let Some(planned) = self.folders.iter().find(|f| f.path == staged.dest) else {
            return Err(refused(
                &staged.dest,
                "not planned as a folder of this publication",
            ));
        };
        self.staged_folders.push(StagedFolderEntry {
            tmp: staged.tmp,
            dest: staged.dest,
            content: planned.content,
        });
        Ok(())
    }
}

impl StagedFolderEntry {
    /// Renames the staged folder into place, moving what it replaces to a backup (checked
    /// again: it must still hold only the output's own files).
    pub(super) fn install(self, live: &mut Live) -> Result<InstalledFolder> {
        let dest = self.dest.clone();
        if let Some(why) = not_replaceable(&dest, self.content, &[]) {
            self.tmp.discard(live);
            return Err(refused(&dest, why));
        }
        let backup = match std::fs::symlink_metadata(&dest) {
            Ok(_) => match TempFolder::move_aside(&dest, live) {
                Ok(b) => Some(b),
                Err(e) => {
                    self.tmp.discard(live);
                    return Err(Error::io(&dest, e));
                }
            },
            Err(_) => None,
        };
        match self.tmp.rename_to(&dest, live) {
            Ok(()) => Ok(InstalledFolder { dest, backup }),
            Err(e) => {
                if let Some(b) = backup {
                    let _ = b.rename_to(&dest, live);
                }
                Err(Error::io(&dest, e))
            }
        }
    }

    pub(super) fn discard(self, live: &mut Live) {
        self.tmp.discard(live);
    }
}

impl InstalledFolder {
    /// Puts back the folder this one replaced, or removes it when it was new.
    pub(super) fn undo(self, live: &mut Live) {
        let _ = std::fs::remove_dir_all(&self.dest);
        if let Some(b) = self.backup {
            let _ = b.rename_to(&self.dest, live);
        }
    }

    /// The set is complete: the replaced folder goes.
    pub(super) fn keep(self, live: &mut Live) {
        if let Some(b) = self.backup {
            b.discard(live);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Inputs;

    const PNGS: FolderContent = FolderContent {
        describe: "*.png",
        accepts: |name| name.ends_with(".png"),
    };

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Plans `out` (a file) and `dir` (a folder), stages both with `files` in the folder.
    fn staged(out: &Path, dir: &Path, files: &[&str]) -> Publication {
        let mut p = Publication::plan(&Inputs::none(), [out]).expect("plan");
        p.plan_folder(dir, PNGS).expect("plan folder");
        p.stage(out, b"new").expect("stage");
        let f = p.stage_folder(dir).expect("stage folder");
        for name in files {
            std::fs::write(f.path().join(name), name).expect("write");
        }
        p.finish_folder(f).expect("finish");
        p
    }

    #[test]
    fn a_folder_is_published_whole_replacing_only_its_own_files() {
        let root = tempfile::tempdir().expect("tempdir");
        let (out, dir) = (root.path().join("out.bin"), root.path().join("plots/deep"));
        // Dropped unpublished: nothing stays, not even the folders created for it.
        drop(staged(&out, &dir, &["a.png"]));
        assert!(names(root.path()).is_empty());
        staged(&out, &dir, &["a.png", "b.png"])
            .publish()
            .expect("publish");
        assert_eq!(names(&dir), ["a.png", "b.png"]);
        assert_eq!(names(root.path()), ["out.bin", "plots"]);
        // Again, with fewer files: the folder is replaced whole (no stale b.png).
        staged(&out, &dir, &["c.png"]).publish().expect("replace");
        assert_eq!(names(&dir), ["c.png"]);
        assert_eq!(names(&root.path().join("plots")), ["deep"]);
        assert!(
            super::super::live()
                .iter()
                .all(|p| !p.starts_with(root.path()))
        );
    }

    #[test]
    fn folders_holding_anything_else_are_refused() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("plots");
        let plan = |dir: &Path| {
            let mut p = Publication::plan(&Inputs::none(), [root.path().join("x.bin")])?;
            p.plan_folder(dir, PNGS)
        };
        std::fs::create_dir(&dir).expect("mkdir");
        plan(&dir).expect("an empty folder");
        std::fs::write(dir.join("notes.txt"), "mine").expect("seed");
        let e = plan(&dir).expect_err("another file").to_string();
        assert!(e.contains("notes.txt") && e.contains("*.png"), "{e}");
        std::fs::remove_file(dir.join("notes.txt")).expect("rm");
        std::fs::create_dir(dir.join("sub.png")).expect("sub-folder");
        assert!(
            plan(&dir)
                .expect_err("a sub-folder")
                .to_string()
                .contains("sub.png")
        );
        let file = root.path().join("file.png");
        std::fs::write(&file, "x").expect("seed");
        let e = plan(&file).expect_err("a file").to_string();
        assert!(e.contains("refusing to replace a file"), "{e}");
        // An input inside it, and an output inside it.
        let input = root.path().join("in/a.png");
        std::fs::create_dir(root.path().join("in")).expect("mkdir");
        std::fs::write(&input, "x").expect("seed");
        let mut p = Publication::plan(&Inputs::files([input.clone()]), ["y.bin"]).expect("plan");
        let e = p
            .plan_folder(root.path().join("in"), PNGS)
            .expect_err("input");
        assert!(e.to_string().contains("is an input") || e.to_string().contains("an input"));
        let out = dir.join("x.bin");
        let mut p = Publication::plan(&Inputs::none(), [&out]).expect("plan");
        std::fs::remove_dir(dir.join("sub.png")).expect("rmdir");
        let e = p.plan_folder(&dir, PNGS).expect_err("an output inside");
        assert!(e.to_string().contains("another output"), "{e}");
    }

    #[test]
    fn a_set_that_fails_to_publish_leaves_the_old_folder() {
        let root = tempfile::tempdir().expect("tempdir");
        let (out, dir) = (root.path().join("out.bin"), root.path().join("plots"));
        staged(&out, &dir, &["old.png"]).publish().expect("first");
        // Something foreign appears in the folder after planning: refused at the rename,
        // and the file output put back too.
        let p = staged(&out, &dir, &["new.png"]);
        std::fs::write(dir.join("late.txt"), "x").expect("seed");
        let e = p.publish().expect_err("changed").to_string();
        assert!(e.contains("late.txt"), "{e}");
        assert_eq!(names(&dir), ["late.txt", "old.png"]);
        assert_eq!(std::fs::read(&out).expect("out"), b"new");
        assert_eq!(names(root.path()), ["out.bin", "plots"]);
    }
}
