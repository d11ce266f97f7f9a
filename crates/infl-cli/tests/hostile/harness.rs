//! The machinery of the hostile suite: a scratch world per case ([`Scene`]), the command
//! line being built ([`Call`]), the expectation ([`Expect`]), and a runner that checks, for
//! every case, the exit code, the message, that nothing panicked, and the state of every
//! file of the scene (inputs and output folder) before and after.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use infl::io::{Rank, TensorFile};

use super::files;

/// The Captum fixture run every scene starts from.
pub fn fixture_run() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/captum/run")
}

/// A factor folder of the Captum TracInCP fixtures (`mlp` or `cnn`).
pub fn fixture_factors(model: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/captum_tracincp")
        .join(model)
        .join("factors")
}

/// Captum's recorded results `expected_TAG.safetensors` for the factor fixtures.
pub fn fixture_golden(tag: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/captum_tracincp")
        .join(format!("expected_{tag}.safetensors"))
}

/// The content of a previous result, pre-seeded where a result will be written: a failed
/// run must leave it byte for byte, a successful one must replace it.
pub const OLD: &[u8] = b"an older result that a failed run must leave as it is\n";

/// The prefix of infl's temporary files (`infl_io::write`).
pub const TMP_PREFIX: &str = ".infl-tmp-";

/// How long one command may take before it is killed and reported (a FIFO that blocks,
/// an unbounded loop).
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The exit code of an interrupted run (the shell's 128 + SIGINT, as `infl` exits).
const INTERRUPTED_CODE: i32 = 130;

/// What a case expects.
#[derive(Clone, Debug)]
pub enum Expect {
    /// Exit code 1 or 2 (an error, not a panic or a signal); stderr contains every needle;
    /// every file of the scene is as it was (no output, no temp file, inputs intact).
    Fails { needles: &'static [&'static str] },
    /// Exit code 0; the expected outputs exist, parse and hold finite numbers; every
    /// other file of the scene is as it was; no temp file.
    Succeeds,
    /// As `Succeeds`, and nothing at all on stderr (a `-q` run has nothing to say there:
    /// no driver noise, no warning).
    SucceedsQuietly,
    /// Sent a signal (see [`Call::signal`]) at some point of its work: it either finished
    /// first (exit 0, checked as `Succeeds`) or stopped (exit 130, or killed by that
    /// signal before its handler was installed) leaving every file as it was — or, when
    /// the signal came just after publishing, every output new (whole, never partial) —
    /// and no temporary file.
    Interrupted,
}

impl Expect {
    fn success(&self) -> bool {
        matches!(self, Expect::Succeeds | Expect::SucceedsQuietly)
    }
}

/// The scratch world of one case, all under one temporary folder (the command's working
/// directory): `run/` (a copy of the fixture run), `out/` (the output folder), and
/// whatever the case adds (a manifest, an MNIST folder...).
pub struct Scene {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub run: PathBuf,
    pub out: PathBuf,
}

impl Scene {
    pub fn new() -> Scene {
        let tmp = tempfile::Builder::new()
            .prefix("infl-hostile-")
            .tempdir()
            .unwrap();
        let root = tmp.path().to_path_buf();
        let (run, out) = (root.join("run"), root.join("out"));
        std::fs::create_dir(&run).unwrap();
        std::fs::create_dir(&out).unwrap();
        for e in std::fs::read_dir(fixture_run()).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), run.join(e.file_name())).unwrap();
        }
        Scene {
            _tmp: tmp,
            root,
            run,
            out,
        }
    }

    /// A file of the run folder.
    pub fn f(&self, name: &str) -> PathBuf {
        self.run.join(name)
    }

    /// The factor folder `root/factors` (see [`Scene::use_factors`]).
    pub fn factors(&self) -> PathBuf {
        self.root.join("factors")
    }

    /// Makes `root/factors` a fresh copy of the `model` factor fixtures (`mlp`, `cnn`),
    /// replacing whatever was there.
    pub fn use_factors(&self, model: &str) -> PathBuf {
        let dir = self.factors();
        if dir.exists() {
            std::fs::remove_dir_all(&dir).unwrap();
        }
        std::fs::create_dir(&dir).unwrap();
        for e in std::fs::read_dir(fixture_factors(model)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
        dir
    }

    /// Writes `text` as `root/NAME` and returns its path.
    pub fn write(&self, name: &str, text: impl AsRef<[u8]>) -> PathBuf {
        let p = self.root.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }

    /// A valid manifest `root/run.json` listing the fixture run (paths relative to it).
    pub fn manifest_text(&self) -> String {
        let entry = |c: &str| {
            format!(
                r#"{{"checkpoint": "run/checkpoint-{c}.safetensors", "train": "run/checkpoint-{c}.train.safetensors", "test": "run/checkpoint-{c}.test.safetensors"}}"#
            )
        };
        format!(
            "{{\"checkpoints\": [\n  {},\n  {},\n  {}\n]}}\n",
            entry("1"),
            entry("2"),
            entry("10")
        )
    }

    /// A tiny MNIST folder (28 x 28; 20 training, 5 test images), training files gzipped,
    /// test files raw.
    pub fn mnist(&self) -> PathBuf {
        let dir = self.root.join("mnist");
        std::fs::create_dir_all(&dir).unwrap();
        let images = |n: usize| -> Vec<u8> { (0..n * 784).map(|i| (i * 7 % 256) as u8).collect() };
        let labels = |n: usize| -> Vec<u8> { (0..n).map(|i| (i % 10) as u8).collect() };
        let w = |name: &str, b: Vec<u8>| std::fs::write(dir.join(name), b).unwrap();
        w(
            "train-images-idx3-ubyte.gz",
            files::gzip(&files::idx(&[20, 28, 28], &images(20))),
        );
        w(
            "train-labels-idx1-ubyte.gz",
            files::gzip(&files::idx(&[20], &labels(20))),
        );
        w(
            "t10k-images-idx3-ubyte",
            files::idx(&[5, 28, 28], &images(5)),
        );
        w("t10k-labels-idx1-ubyte", files::idx(&[5], &labels(5)));
        dir
    }

    /// Makes a FIFO at `path`.
    pub fn fifo(&self, path: &Path) {
        let ok = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mkfifo {}", path.display());
    }

    /// A character device at `path` that is safe to destroy: as root, a fresh node with
    /// /dev/null's numbers (so a bug replaces a node of the scratch folder, never the
    /// system's /dev/null); otherwise /dev/null itself, which a non-root process cannot
    /// replace. `None` when neither is possible.
    pub fn device(&self, path: &Path) -> Option<PathBuf> {
        if !is_root() {
            return Some(PathBuf::from("/dev/null"));
        }
        let ok = std::process::Command::new("mknod")
            .arg(path)
            .args(["c", "1", "3"])
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| path.to_path_buf())
    }
}

impl Drop for Scene {
    /// Gives write permission back to every folder (a case may lock one), so that the
    /// scratch folder can be removed.
    fn drop(&mut self) {
        fn unlock(dir: &Path) {
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    unlock(&e.path());
                }
            }
        }
        unlock(&self.root);
    }
}

/// True when this process runs as root (permissions do not stop it).
pub fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        // A folder without write permission: only root can still create a file in it.
        let d = tempfile::tempdir().unwrap();
        let locked = d.path().join("locked");
        std::fs::create_dir(&locked).unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
        let root = std::fs::write(locked.join("probe"), b"x").is_ok();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
        root
    })
}

/// One command line being built. Flags are kept in order, one value each, so a case
/// replaces a default (`set`) or removes it (`unset`) instead of repeating it.
#[derive(Clone, Debug)]
pub struct Call {
    /// `scores`, `topk`, `self-influence`, `demo`.
    pub sub: &'static str,
    flags: Vec<(String, Option<OsString>)>,
    /// Appended verbatim after the flags.
    pub raw: Vec<OsString>,
    /// Paths outside the scene whose kind (and content) must not change.
    pub watch: Vec<PathBuf>,
    /// Set by a setup that cannot build its case here (printed, not run).
    pub skip: Option<String>,
    /// Epochs of a demo call, for its expected outputs.
    pub epochs: usize,
    /// A signal (`INT`, `TERM`...) sent after a delay.
    pub signal: Option<(&'static str, Duration)>,
    /// After a success, the results must match these recorded ones.
    pub golden: Option<Golden>,
}

/// Recorded results a successful scoring call must reproduce: the tensors of `file` named
/// like the subcommand's (`scores`; `proponent_scores` and `opponent_scores`;
/// `self_influence`), each within `rtol` times its largest magnitude.
#[derive(Clone, Debug)]
pub struct Golden {
    pub file: PathBuf,
    pub rtol: f32,
}

impl Call {
    pub fn new(sub: &'static str) -> Call {
        Call {
            sub,
            flags: Vec::new(),
            raw: Vec::new(),
            watch: Vec::new(),
            skip: None,
            epochs: 0,
            signal: None,
            golden: None,
        }
    }

    /// The default call of a scoring subcommand on the scene's run: CPU or GPU, quiet,
    /// outputs in `out/`, where an older result of the same name is pre-seeded.
    pub fn scoring(scene: &Scene, sub: &'static str, method: &str, backend: &str) -> Call {
        let mut c = Call::new(sub);
        c.set("--run", &scene.run)
            .set("--layer", "fc3")
            .set("--method", method)
            .set("--backend", backend)
            .switch("-q");
        let seed = |name: &str| {
            std::fs::write(scene.out.join(name), OLD).unwrap();
            scene.out.join(name)
        };
        match sub {
            "scores" => {
                c.set("--out", seed("scores.safetensors"));
            }
            "topk" => {
                c.set("-k", "3")
                    .set("--out", seed("topk.safetensors"))
                    .set("--json", seed("topk.json"));
            }
            "self-influence" => {
                for f in SELF_FILES {
                    seed(f);
                }
                c.set("--out-dir", &scene.out).set("--top", "5");
            }
            "index-build" => {
                c.set("--index", scene.out.join("idx"));
            }
            "fit" => {
                c.set("--out", seed("hessian.safetensors"));
            }
            other => panic!("not a scoring subcommand: {other}"),
        }
        c
    }

    /// The default call of a scoring subcommand on a factor folder: as [`Call::scoring`],
    /// with `root/factors` a copy of the MLP factor fixtures, `--factors` instead of
    /// `--run`, and `--layers fc1,fc2` instead of `--layer`.
    pub fn factor_scoring(scene: &Scene, sub: &'static str, method: &str, backend: &str) -> Call {
        let mut c = Call::scoring(scene, sub, method, backend);
        let dir = scene.use_factors("mlp");
        c.unset("--run")
            .unset("--layer")
            .set("--factors", dir)
            .set("--layers", "fc1,fc2");
        c
    }

    /// The default demo call: the bundled subset cut to 20 training and 5 test images, one
    /// epoch of a tiny MLP, no plots, into `out/demo`, where the results of an earlier run
    /// are pre-seeded.
    pub fn demo(scene: &Scene) -> Call {
        let dir = scene.out.join("demo");
        std::fs::create_dir_all(dir.join("run")).unwrap();
        std::fs::write(dir.join("results.json"), OLD).unwrap();
        std::fs::write(dir.join("run/epoch-1.safetensors"), OLD).unwrap();
        let mut c = Call::new("demo");
        c.set("--train", "20")
            .set("--test", "5")
            .set("--epochs", "1")
            .set("--hidden", "8")
            .set("--batch-size", "8")
            .set("--explain", "2")
            .switch("--no-plots")
            .switch("-q")
            .set("--out", &dir);
        c.epochs = 1;
        c
    }

    pub fn set(&mut self, flag: &str, value: impl AsRef<OsStr>) -> &mut Self {
        let v = Some(value.as_ref().to_os_string());
        match self.flags.iter_mut().find(|(f, _)| f == flag) {
            Some(slot) => slot.1 = v,
            None => self.flags.push((flag.to_string(), v)),
        }
        if flag == "--epochs" {
            self.epochs = value
                .as_ref()
                .to_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
        }
        self
    }

    pub fn switch(&mut self, flag: &str) -> &mut Self {
        if !self.flags.iter().any(|(f, _)| f == flag) {
            self.flags.push((flag.to_string(), None));
        }
        self
    }

    pub fn unset(&mut self, flag: &str) -> &mut Self {
        self.flags.retain(|(f, _)| f != flag);
        self
    }

    pub fn get(&self, flag: &str) -> Option<&OsStr> {
        self.flags
            .iter()
            .find(|(f, _)| f == flag)
            .and_then(|(_, v)| v.as_deref())
    }

    /// Uses `--manifest PATH` instead of `--run`.
    pub fn manifest(&mut self, path: &Path) -> &mut Self {
        self.unset("--run").set("--manifest", path)
    }

    /// The arguments after `infl`.
    pub fn args(&self) -> Vec<OsString> {
        // `index-build` is the two words `index build`.
        let mut a: Vec<OsString> = self.sub.split('-').map(OsString::from).collect();
        if !self.sub.starts_with("index-") {
            a = vec![OsString::from(self.sub)];
        }
        for (f, v) in &self.flags {
            match v {
                None => a.push(f.into()),
                // `--flag=-1`: a value that starts with '-' is not taken for a flag.
                Some(v) if f.starts_with("--") && v.as_encoded_bytes().first() == Some(&b'-') => {
                    let mut s = OsString::from(format!("{f}="));
                    s.push(v);
                    a.push(s);
                }
                Some(v) => {
                    a.push(f.into());
                    a.push(v.clone());
                }
            }
        }
        a.extend(self.raw.iter().cloned());
        a
    }

    /// The files a successful run must leave (relative paths resolved in `cwd`).
    pub fn outputs(&self, cwd: &Path) -> Vec<PathBuf> {
        let at = |p: &OsStr| cwd.join(p);
        match self.sub {
            "scores" => vec![at(self
                .get("--out")
                .unwrap_or("scores.safetensors".as_ref()))],
            "topk" => {
                let mut v = vec![at(self.get("--out").unwrap_or("topk.safetensors".as_ref()))];
                v.extend(self.get("--json").map(at));
                v
            }
            "self-influence" => {
                let dir = at(self.get("--out-dir").unwrap_or(".".as_ref()));
                SELF_FILES.iter().map(|f| dir.join(f)).collect()
            }
            "index-build" => {
                let dir = at(self.get("--index").expect("index-build has --index"));
                INDEX_FILES.iter().map(|f| dir.join(f)).collect()
            }
            "fit" => vec![at(self
                .get("--out")
                .unwrap_or("hessian.safetensors".as_ref()))],
            "demo" => {
                let dir = at(self.get("--out").unwrap_or("infl-demo".as_ref()));
                let mut v = vec![dir.join("results.json"), dir.join("forgetting.safetensors")];
                for e in 1..=self.epochs {
                    for s in ["", ".train", ".test"] {
                        v.push(dir.join(format!("run/epoch-{e}{s}.safetensors")));
                    }
                }
                v
            }
            other => panic!("unknown subcommand {other}"),
        }
    }
}

/// The files of an index folder.
pub const INDEX_FILES: [&str; 2] = ["embeddings.safetensors", "ann.usearch"];

/// The three files of `self-influence`.
pub const SELF_FILES: [&str; 3] = [
    "self_influence.safetensors",
    "suspicious.csv",
    "suspicious.json",
];

/// Builds a case's call in its scene (mutating the scene as the case needs).
pub type Build = Arc<dyn Fn(&Scene) -> Call + Send + Sync>;

/// One hostile case.
#[derive(Clone)]
pub struct Case {
    /// `class/subcommand[/method/backend]: what`.
    pub name: String,
    pub build: Build,
    pub expect: Expect,
    /// For a GPU twin: the name of the CPU case whose error message it must repeat.
    pub twin_of: Option<String>,
}

impl Case {
    pub fn new(
        name: impl Into<String>,
        build: impl Fn(&Scene) -> Call + Send + Sync + 'static,
        expect: Expect,
    ) -> Case {
        Case {
            name: name.into(),
            build: Arc::new(build),
            expect,
            twin_of: None,
        }
    }
}

/// The state of one path (not following links; FIFOs and devices are never opened).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    Dir { mode: u32 },
    File { len: u64, hash: u64, mode: u32 },
    Link(PathBuf),
    Other(&'static str),
}

fn node(path: &Path) -> Option<Node> {
    let m = std::fs::symlink_metadata(path).ok()?;
    let t = m.file_type();
    let mode = m.permissions().mode() & 0o7777;
    Some(if t.is_dir() {
        Node::Dir { mode }
    } else if t.is_file() {
        let bytes = std::fs::read(path).unwrap_or_default();
        let mut h = std::hash::DefaultHasher::new();
        bytes.hash(&mut h);
        Node::File {
            len: m.len(),
            hash: h.finish(),
            mode,
        }
    } else if t.is_symlink() {
        Node::Link(std::fs::read_link(path).unwrap_or_default())
    } else if t.is_fifo() {
        Node::Other("fifo")
    } else if t.is_char_device() {
        Node::Other("character device")
    } else if t.is_block_device() {
        Node::Other("block device")
    } else if t.is_socket() {
        Node::Other("socket")
    } else {
        Node::Other("unknown")
    })
}

/// Every path under `root` (relative) with its state.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Node>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if let Some(n) = node(&p) {
                let is_dir = matches!(n, Node::Dir { .. });
                out.insert(p.strip_prefix(root).unwrap().to_path_buf(), n);
                if is_dir {
                    walk(root, &p, out);
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// What one command did.
struct Ran {
    code: Option<i32>,
    /// The signal that ended the process, if one did.
    killed_by: Option<i32>,
    stderr: String,
    timed_out: bool,
    seconds: f64,
}

fn run_infl(args: &[OsString], cwd: &Path, signal: Option<(&str, Duration)>) -> Ran {
    let started = Instant::now();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("infl"))
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        // The same on every machine: wgpu's probing complained when this is unset.
        .env_remove("XDG_RUNTIME_DIR")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn infl");
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = so.read_to_end(&mut b);
        b
    });
    let t_err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = se.read_to_end(&mut b);
        b
    });
    let mut timed_out = false;
    let mut signal = signal;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if let Some((name, after)) = signal
            && started.elapsed() >= after
        {
            let sent = std::process::Command::new("kill")
                .arg(format!("-{name}"))
                .arg(child.id().to_string())
                .status()
                .is_ok_and(|s| s.success());
            assert!(sent, "kill -{name}");
            signal = None;
        }
        if started.elapsed() > TIMEOUT {
            timed_out = true;
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(3));
    };
    let _ = t_out.join();
    let stderr = String::from_utf8_lossy(&t_err.join().unwrap_or_default()).into_owned();
    Ran {
        code: status.code(),
        killed_by: std::os::unix::process::ExitStatusExt::signal(&status),
        stderr,
        timed_out,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// The result of one case.
pub struct Outcome {
    pub name: String,
    pub skipped: Option<String>,
    pub problems: Vec<String>,
    pub stderr: String,
    /// The error message (from the first `error:` line on), the scene's path replaced by
    /// `<scene>`, for comparing backends.
    pub message: String,
    pub succeeded: bool,
    pub code: Option<i32>,
    pub seconds: f64,
}

/// Infl's error message in `stderr`, with the scene's folder written `<scene>`.
fn message(stderr: &str, root: &Path) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.contains("XDG_RUNTIME_DIR"))
        .collect();
    let from = lines
        .iter()
        .position(|l| l.starts_with("error"))
        .unwrap_or(lines.len());
    lines[from..]
        .join("\n")
        .replace(&*root.to_string_lossy(), "<scene>")
}

fn run_case(case: &Case) -> Outcome {
    let scene = Scene::new();
    let call = (case.build)(&scene);
    let mut out = Outcome {
        name: case.name.clone(),
        skipped: call.skip.clone(),
        problems: Vec::new(),
        stderr: String::new(),
        message: String::new(),
        succeeded: false,
        code: None,
        seconds: 0.0,
    };
    if out.skipped.is_some() {
        return out;
    }
    let before = snapshot(&scene.root);
    let watched: Vec<_> = call.watch.iter().map(|p| node(p)).collect();
    let ran = run_infl(&call.args(), &scene.root, call.signal);
    let after = snapshot(&scene.root);
    out.stderr = ran.stderr.clone();
    out.message = message(&ran.stderr, &scene.root);
    out.seconds = ran.seconds;
    out.succeeded = ran.code == Some(0);
    out.code = ran.code;
    let p = &mut out.problems;

    if ran.timed_out {
        p.push(format!("timed out after {} s (killed)", TIMEOUT.as_secs()));
    }
    for bad in ["panicked", "RUST_BACKTRACE"] {
        if ran.stderr.contains(bad) {
            p.push(format!("stderr contains {bad:?}"));
        }
    }
    // An interrupted run that finished first is judged as a success.
    let success = case.expect.success()
        || (matches!(case.expect, Expect::Interrupted) && ran.code == Some(0));
    let signalled = |s: i32| {
        call.signal.is_some_and(|(name, _)| match name {
            "INT" => s == 2,
            "TERM" => s == 15,
            "HUP" => s == 1,
            _ => false,
        })
    };
    match (&case.expect, ran.code) {
        (Expect::Fails { .. }, Some(1 | 2)) => {}
        (Expect::Interrupted, Some(0 | INTERRUPTED_CODE)) => {}
        (Expect::Interrupted, None) if ran.killed_by.is_some_and(signalled) => {}
        (e, Some(0)) if e.success() => {}
        (Expect::Fails { .. }, Some(0)) => p.push("exit code 0, expected a failure".into()),
        (Expect::Fails { .. }, Some(101)) => p.push("exit code 101 (a panic)".into()),
        (_, Some(c)) => p.push(format!("exit code {c}")),
        (_, None) => p.push(format!("killed by signal {:?}", ran.killed_by)),
    }
    if matches!(case.expect, Expect::SucceedsQuietly) && !ran.stderr.is_empty() {
        p.push("stderr is not empty".into());
    }
    if let Expect::Fails { needles } = &case.expect {
        for n in *needles {
            if !ran.stderr.contains(n) {
                p.push(format!("stderr lacks {n:?}"));
            }
        }
    }

    // No temporary file anywhere in the scene.
    let tmp: Vec<_> = after
        .keys()
        .filter(|k| {
            k.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(TMP_PREFIX))
        })
        .collect();
    if !tmp.is_empty() {
        p.push(format!("temporary files left: {tmp:?}"));
    }
    // Paths outside the scene (devices) keep their kind.
    for (path, was) in call.watch.iter().zip(&watched) {
        let now = node(path);
        if &now != was {
            p.push(format!("{} changed: {was:?} -> {now:?}", path.display()));
        }
    }
    // Every file of the scene: as it was, except the outputs of a success — or of a run
    // whose signal came after it had published its whole result set (exit 130 with every
    // output new: complete, not partial).
    let all_outputs: Vec<PathBuf> = call
        .outputs(&scene.root)
        .into_iter()
        .filter_map(|o| o.strip_prefix(&scene.root).ok().map(Path::to_path_buf))
        .collect();
    let published_whole = matches!(case.expect, Expect::Interrupted)
        && ran.code == Some(INTERRUPTED_CODE)
        && !all_outputs.is_empty()
        && all_outputs
            .iter()
            .all(|o| after.get(o).is_some_and(|v| before.get(o) != Some(v)));
    let outputs: Vec<PathBuf> = if (success && ran.code == Some(0)) || published_whole {
        all_outputs
    } else {
        Vec::new()
    };
    let ancestors: BTreeSet<&Path> = outputs.iter().flat_map(|o| o.ancestors().skip(1)).collect();
    for (k, v) in &after {
        if outputs.contains(k) {
            continue;
        }
        match before.get(k) {
            Some(b) if b == v => {}
            Some(b) => p.push(format!("{} changed: {b:?} -> {v:?}", k.display())),
            None if matches!(v, Node::Dir { .. }) && ancestors.contains(k.as_path()) => {}
            None => p.push(format!("new file {} ({v:?})", k.display())),
        }
    }
    for k in before.keys() {
        if !after.contains_key(k) {
            p.push(format!("{} was removed", k.display()));
        }
    }
    for o in &outputs {
        match after.get(o) {
            Some(Node::File { .. }) => {
                if let Err(why) = check_output(&scene.root.join(o), call.sub) {
                    p.push(format!("output {}: {why}", o.display()));
                }
            }
            other => p.push(format!("output {} missing ({other:?})", o.display())),
        }
    }
    if let (Some(golden), Some(first)) = (&call.golden, outputs.first())
        && let Err(why) = check_golden(&scene.root.join(first), call.sub, golden)
    {
        p.push(format!("output {}: {why}", first.display()));
    }
    out
}

/// The results of a success against recorded ones (see [`Golden`]).
fn check_golden(path: &Path, sub: &str, golden: &Golden) -> Result<(), String> {
    let got = TensorFile::open(path).map_err(|e| e.to_string())?;
    let want = TensorFile::open(&golden.file).map_err(|e| e.to_string())?;
    let names: &[&str] = match sub {
        "scores" => &["scores"],
        "topk" => &["proponent_scores", "opponent_scores"],
        "self-influence" => &["self_influence"],
        _ => &[],
    };
    for &name in names {
        if !want.contains(name) {
            continue;
        }
        let read = |f: &TensorFile| {
            f.matrix(name, Rank::MatrixOrVector)
                .map(|m| m.data().to_vec())
                .map_err(|e| e.to_string())
        };
        let (g, w) = (read(&got)?, read(&want)?);
        if g.len() != w.len() {
            return Err(format!("{name}: {} values, recorded {}", g.len(), w.len()));
        }
        let tol = golden.rtol * w.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        if let Some((i, (a, b))) = g
            .iter()
            .zip(&w)
            .enumerate()
            .find(|(_, (a, b))| (*a - *b).abs() > tol || !a.is_finite())
        {
            return Err(format!(
                "{name}[{i}] = {a}, recorded {b} (tolerance {tol:e}, from {})",
                golden.file.display()
            ));
        }
    }
    Ok(())
}

/// An output of a success: replaced (not the pre-seeded older result), readable, and its
/// numbers finite.
fn check_output(path: &Path, sub: &str) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    if bytes == OLD {
        return Err("still the older result (not replaced)".into());
    }
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    if name.ends_with(".safetensors") {
        let f = TensorFile::open(path).map_err(|e| e.to_string())?;
        let want: &[&str] = match (sub, name.as_str()) {
            ("scores", _) => &["scores", "train_ids", "test_ids"],
            ("topk", _) => &["proponents", "opponents", "proponent_scores"],
            ("self-influence", _) => &["self_influence", "ids"],
            _ => &[],
        };
        for w in want {
            if !f.contains(w) {
                return Err(format!("no tensor {w} (has {:?})", f.names()));
            }
        }
        for n in f.names() {
            let dtype = format!("{:?}", f.info(&n).map_err(|e| e.to_string())?.dtype);
            if dtype.starts_with('F') || dtype.starts_with("BF") {
                let m = f
                    .matrix(&n, Rank::MatrixOrVector)
                    .map_err(|e| e.to_string())?;
                if let Some(x) = m.data().iter().find(|x| !x.is_finite()) {
                    return Err(format!("tensor {n} holds {x}"));
                }
            }
        }
    } else if name.ends_with(".json") && sub == "demo" {
        // results.json: forgetting-event scores are null for examples never learnt.
        serde_json::from_slice::<serde_json::Value>(&bytes).map_err(|e| e.to_string())?;
    } else if name.ends_with(".json") {
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        fn finite_scores(v: &serde_json::Value) -> Result<(), String> {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, x) in m {
                        if (k == "score" || k == "self_influence") && !x.is_number() {
                            return Err(format!("{k} is {x}"));
                        }
                        finite_scores(x)?;
                    }
                    Ok(())
                }
                serde_json::Value::Array(a) => a.iter().try_for_each(finite_scores),
                _ => Ok(()),
            }
        }
        finite_scores(&v)?;
    } else if name.ends_with(".csv") {
        let text = String::from_utf8(bytes).map_err(|e| e.to_string())?;
        let mut lines = text.lines();
        if !lines.next().is_some_and(|h| h.starts_with("rank,")) {
            return Err("no CSV header".into());
        }
        for l in lines {
            let score = l.split(',').nth(3).unwrap_or("");
            if !score.parse::<f32>().is_ok_and(f32::is_finite) {
                return Err(format!("row {l:?}: self-influence {score:?}"));
            }
        }
    }
    Ok(())
}

/// Whether `--backend gpu` works here (probed once). With `INFL_REQUIRE_GPU=1` a missing
/// adapter is an error, as in tests/gpu.rs; a failure other than "no adapter" always is.
pub fn gpu() -> Result<bool, String> {
    static GPU: OnceLock<Result<bool, String>> = OnceLock::new();
    GPU.get_or_init(|| {
        let scene = Scene::new();
        let args: Vec<OsString> = [
            "self-influence",
            "-q",
            "--backend",
            "gpu",
            "--layer",
            "fc3",
            "--run",
            "run",
            "--out-dir",
            "out",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let ran = run_infl(&args, &scene.root, None);
        let required = std::env::var("INFL_REQUIRE_GPU").is_ok_and(|v| v == "1");
        match ran.code {
            Some(0) => Ok(true),
            _ if required => Err(format!(
                "INFL_REQUIRE_GPU=1 but --backend gpu failed: {}",
                ran.stderr
            )),
            _ if ran.stderr.contains("no usable GPU adapter") => Ok(false),
            _ => Err(format!(
                "--backend gpu failed for another reason than a missing adapter: {}",
                ran.stderr
            )),
        }
    })
    .clone()
}

/// Runs every case of a group (in parallel), then the CPU/GPU comparisons, prints the
/// count and the time, and panics with every broken case (name and why).
pub fn run_group(group: &str, cases: Vec<Case>) {
    let started = Instant::now();
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8);
    let next = AtomicUsize::new(0);
    let outcomes: Mutex<Vec<Option<Outcome>>> =
        Mutex::new((0..cases.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(case) = cases.get(i) else { break };
                    let o =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_case(case)))
                            .unwrap_or_else(|e| Outcome {
                                name: case.name.clone(),
                                skipped: None,
                                problems: vec![format!(
                                    "the harness panicked: {}",
                                    e.downcast_ref::<String>()
                                        .cloned()
                                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                                        .unwrap_or_default()
                                )],
                                stderr: String::new(),
                                message: String::new(),
                                succeeded: false,
                                code: None,
                                seconds: 0.0,
                            });
                    outcomes.lock().unwrap()[i] = Some(o);
                }
            });
        }
    });
    let mut outcomes: Vec<Outcome> = outcomes
        .into_inner()
        .unwrap()
        .into_iter()
        .map(Option::unwrap)
        .collect();
    // A GPU twin repeats its CPU case's outcome and message exactly.
    for i in 0..cases.len() {
        let Some(cpu_name) = &cases[i].twin_of else {
            continue;
        };
        let Some(j) = outcomes.iter().position(|o| &o.name == cpu_name) else {
            continue;
        };
        let (cpu_ok, cpu_msg) = (outcomes[j].succeeded, outcomes[j].message.clone());
        let gpu = &mut outcomes[i];
        if gpu.skipped.is_none() && (gpu.succeeded != cpu_ok || gpu.message != cpu_msg) {
            gpu.problems.push(format!(
                "the GPU and the CPU disagree:\n      cpu: {cpu_msg}\n      gpu: {}",
                gpu.message
            ));
        }
    }
    let ran = outcomes.iter().filter(|o| o.skipped.is_none()).count();
    // HOSTILE_VERBOSE=1: every case with its exit code and message (to review the suite).
    if std::env::var_os("HOSTILE_VERBOSE").is_some() {
        for o in &outcomes {
            let first = o.message.lines().next().unwrap_or("");
            println!(
                "[{:?} {:.2}s] {}\n        {first}",
                o.code, o.seconds, o.name
            );
        }
    }
    for o in outcomes.iter().filter(|o| o.skipped.is_some()) {
        println!(
            "note: skipped {}: {}",
            o.name,
            o.skipped.as_deref().unwrap()
        );
    }
    let slow: Vec<_> = outcomes
        .iter()
        .filter(|o| o.seconds > 5.0)
        .map(|o| format!("{} ({:.1} s)", o.name, o.seconds))
        .collect();
    if !slow.is_empty() {
        println!("note: slow cases: {slow:?}");
    }
    let broken: Vec<&Outcome> = outcomes.iter().filter(|o| !o.problems.is_empty()).collect();
    println!(
        "hostile {group}: {ran} cases run ({} skipped), {} broken, {:.1} s",
        outcomes.len() - ran,
        broken.len(),
        started.elapsed().as_secs_f64()
    );
    if !broken.is_empty() {
        let mut report = format!("{} of {ran} hostile {group} cases broken:\n", broken.len());
        for o in broken {
            report.push_str(&format!("\n--- {}\n", o.name));
            for p in &o.problems {
                report.push_str(&format!("    {p}\n"));
            }
            let err = o.stderr.trim_end();
            if !err.is_empty() {
                report.push_str("    stderr:\n");
                for l in err.lines().filter(|l| !l.contains("XDG_RUNTIME_DIR")) {
                    report.push_str(&format!("      | {l}\n"));
                }
            }
        }
        panic!("{report}");
    }
}
