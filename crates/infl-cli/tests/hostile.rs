//! The hostile suite (issue 8): inputs, arguments and output folders as a hostile new user
//! would set them up, against every subcommand and every public estimator.
//!
//! Every case asserts the exit code (1 or 2 for a refusal: never a panic, a signal or a
//! hang), that stderr names what is wrong (its needles: the file, tensor or flag, and a
//! keyword), that nothing panicked, and the state of every file of its scratch folder
//! afterwards: after a refusal every input and the output folder are byte for byte as
//! before (a pre-seeded older result survives, no temporary file is left, nothing is
//! published); after a success the expected outputs replaced the older ones, parse and hold
//! finite numbers, and nothing else changed.
//!
//! The cases are tables, one line or entry each. An [`input`] entry mutates the run and is
//! instantiated for every scoring subcommand ([`SUBS`]) and every public `--method`
//! ([`methods`]); an [`arg`] entry is instantiated for the subcommands it lists; a
//! [`demo`] entry runs `infl demo`. Entries marked `.gpu()` also run on `--backend gpu`
//! when an adapter is present (required with `INFL_REQUIRE_GPU=1`, as in tests/gpu.rs),
//! and must give the CPU's message exactly. A new subcommand joins [`SUBS`] (and
//! `Call::scoring`); a new estimator joins by being registered.
//!
//! Each class runs as one test that reports every broken case (name, why, stderr) at
//! once. The readers of factor folders (`--factors`) have their own group
//! (`class5_factor_files`, in hostile/factors.rs): the same entries and expectations, on a
//! scratch copy of the Captum TracInCP factor fixtures.

#[path = "hostile/factors.rs"]
mod factors;
#[path = "hostile/files.rs"]
mod files;
#[path = "hostile/harness.rs"]
mod harness;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use files::{St, edit, edit_header};
use harness::{Call, Case, Expect, Scene, run_group};

/// Every scoring subcommand (each reads a run and writes results).
const SUBS: &[&str] = &["scores", "topk", "self-influence"];

/// The subcommands that read a run's inputs: the scoring ones, `index build` and `fit`
/// (which, like `self-influence`, read only the training files; `fit` is influence
/// functions' only).
const INPUT_SUBS: &[&str] = &["scores", "topk", "self-influence", "index-build", "fit"];
/// The subcommands with an `--out` file.
const OUT_FILE: &[&str] = &["scores", "topk"];
const TOPK: &[&str] = &["topk"];
const SELF: &[&str] = &["self-influence"];
const SCORES: &[&str] = &["scores"];

/// The checkpoints of the fixture run.
const CKPTS: [&str; 3] = ["1", "2", "10"];

/// The estimators a user can choose that read a run's features (what these cases mutate):
/// the registry without the test-only ones (which test builds register too) and without
/// the readers of factor files (their cases are in `class5_factor_files`).
fn methods() -> Vec<&'static str> {
    use infl::estimators::{Audience, Input};
    let public: Vec<&'static str> = infl::estimators::REGISTRY
        .iter()
        .filter(|r| r.audience == Audience::Users && r.input != Input::Factors)
        .map(|r| r.name)
        .collect();
    assert!(!public.is_empty(), "no public estimator");
    public
}

/// Whether `infl index build` accepts `method`.
fn indexable(method: &str) -> bool {
    let r = infl::estimators::find(method).expect("a registered method");
    r.indexing == infl::estimators::Indexing::Embeddings
}

fn fails(needles: &'static [&'static str]) -> Expect {
    Expect::Fails { needles }
}

/// A case family: a setup (on the scene and the default call) and its expectation.
#[derive(Clone)]
struct Entry {
    what: &'static str,
    subs: &'static [&'static str],
    apply: fn(&Scene, &mut Call),
    expect: Expect,
    /// Only the test feature files are touched: `self-influence`, which never opens them,
    /// succeeds.
    test_only: bool,
    /// Also on `--backend gpu` (same message as the CPU).
    gpu: bool,
    /// For every public method (input mutations), else the default one.
    every_method: bool,
    /// Only for methods that read every checkpoint and its learning rate (TracIn; not
    /// influence functions, which use the last checkpoint's model and no learning rate).
    all_checkpoints: bool,
}

/// An input mutation: for every scoring subcommand and every public method.
fn input(what: &'static str, apply: fn(&Scene, &mut Call), expect: Expect) -> Entry {
    Entry {
        what,
        subs: INPUT_SUBS,
        apply,
        expect,
        test_only: false,
        gpu: false,
        every_method: true,
        all_checkpoints: false,
    }
}

/// An argument or output case for the subcommands `subs` (default method).
fn arg(
    what: &'static str,
    subs: &'static [&'static str],
    apply: fn(&Scene, &mut Call),
    expect: Expect,
) -> Entry {
    Entry {
        what,
        subs,
        apply,
        expect,
        test_only: false,
        gpu: false,
        every_method: false,
        all_checkpoints: false,
    }
}

impl Entry {
    fn test_only(mut self) -> Self {
        self.test_only = true;
        self
    }
    fn gpu(mut self) -> Self {
        self.gpu = true;
        self
    }
    fn all_checkpoints(mut self) -> Self {
        self.all_checkpoints = true;
        self
    }
}

/// The default call of a subcommand for a method on a backend, in a scene.
type Base = fn(&Scene, &'static str, &str, &str) -> Call;

/// The cases of `entries`: per subcommand, method and backend.
fn instantiate(class: &str, entries: Vec<Entry>, with_gpu: bool) -> Vec<Case> {
    instantiate_on(class, entries, with_gpu, methods(), Call::scoring)
}

/// The cases of `entries` for `methods`, each starting from `base`.
fn instantiate_on(
    class: &str,
    entries: Vec<Entry>,
    with_gpu: bool,
    methods: Vec<&'static str>,
    base: Base,
) -> Vec<Case> {
    let mut cases = Vec::new();
    for e in entries {
        for &sub in e.subs {
            let ms = if e.every_method {
                &methods[..]
            } else {
                &methods[..1]
            };
            for &method in ms {
                if sub == "fit"
                    && method != infl::Estimator::name(&infl::InfluenceFunction::default())
                {
                    continue; // `infl fit` fits influence functions only
                }
                if sub == "index-build" && !indexable(method) {
                    continue; // refused before reading (crates/infl-cli/tests/influence.rs)
                }
                if e.all_checkpoints
                    && method == infl::Estimator::name(&infl::InfluenceFunction::default())
                {
                    continue; // a mutation of what influence functions do not read
                }
                let reads_test = !matches!(sub, "self-influence" | "index-build" | "fit");
                let expect = if e.test_only && !reads_test {
                    Expect::Succeeds
                } else {
                    e.expect.clone()
                };
                let backends: &[&'static str] = if e.gpu && with_gpu {
                    &["cpu", "gpu"]
                } else {
                    &["cpu"]
                };
                for &backend in backends {
                    let apply = e.apply;
                    let mut case = Case::new(
                        format!("{class}/{sub}/{method}/{backend}: {}", e.what),
                        move |s| {
                            let mut c = base(s, sub, method, backend);
                            apply(s, &mut c);
                            c
                        },
                        expect.clone(),
                    );
                    if backend == "gpu" {
                        case.twin_of = Some(format!("{class}/{sub}/{method}/cpu: {}", e.what));
                    }
                    cases.push(case);
                }
            }
        }
    }
    cases
}

/// A demo case.
fn demo(class: &str, what: &str, apply: fn(&Scene, &mut Call), expect: Expect) -> Case {
    Case::new(
        format!("{class}/demo: {what}"),
        move |s| {
            let mut c = Call::demo(s);
            apply(s, &mut c);
            c
        },
        expect,
    )
}

// ---------------------------------------------------------------------------------------
// Helpers that build hostile inputs.

fn ck(c: &str) -> String {
    format!("checkpoint-{c}.safetensors")
}
fn tr(c: &str) -> String {
    format!("checkpoint-{c}.train.safetensors")
}
fn te(c: &str) -> String {
    format!("checkpoint-{c}.test.safetensors")
}

/// Element `at` (row-major) of the F32 tensor `tensor` of run file `file` becomes `v`.
fn set_f32(s: &Scene, file: &str, tensor: &str, at: usize, v: f32) {
    edit(&s.f(file), |st| {
        let shape = st.shape(tensor);
        let mut x = st.f32s(tensor);
        x[at] = v;
        st.put_f32(tensor, &shape, &x);
    });
}

/// Row `row` of a 2-D F32 tensor becomes `v` everywhere.
fn set_row(s: &Scene, file: &str, tensor: &str, row: usize, v: f32) {
    edit(&s.f(file), |st| {
        let shape = st.shape(tensor);
        let mut x = st.f32s(tensor);
        x[row * shape[1]..(row + 1) * shape[1]].fill(v);
        st.put_f32(tensor, &shape, &x);
    });
}

/// Every element of an F32 tensor becomes `v`.
fn fill(s: &Scene, file: &str, tensor: &str, v: f32) {
    edit(&s.f(file), |st| {
        let shape = st.shape(tensor);
        let n = shape.iter().product();
        st.put_f32(tensor, &shape, &vec![v; n]);
    });
}

/// `f` applied to one kind of file of every checkpoint: `""` (the checkpoint), `"train"`
/// or `"test"`.
fn every(s: &Scene, kind: &str, f: impl Fn(&mut St)) {
    for c in CKPTS {
        let name = match kind {
            "" => ck(c),
            "train" => tr(c),
            _ => te(c),
        };
        edit(&s.f(&name), &f);
    }
}

/// Integer values of an I64 tensor changed by `f`.
fn ints(st: &mut St, tensor: &str, f: impl Fn(&mut Vec<i64>)) {
    let shape = st.shape(tensor);
    let mut v = st.i64s(tensor);
    f(&mut v);
    st.put_i64(tensor, &shape, &v);
}

/// Drops the last `n` bytes of a run file.
fn cut(s: &Scene, file: &str, n: usize) {
    let p = s.f(file);
    let b = std::fs::read(&p).unwrap();
    std::fs::write(&p, &b[..b.len() - n]).unwrap();
}

/// Replaces a run file by a FIFO.
fn fifo_at(s: &Scene, file: &str) {
    let p = s.f(file);
    std::fs::remove_file(&p).unwrap();
    s.fifo(&p);
}

/// Replaces a run file by a directory.
fn dir_at(s: &Scene, file: &str) {
    let p = s.f(file);
    std::fs::remove_file(&p).unwrap();
    std::fs::create_dir(&p).unwrap();
}

/// Replaces a run file by a symlink to `target`.
fn link_at(s: &Scene, file: &str, target: impl AsRef<Path>) {
    let p = s.f(file);
    std::fs::remove_file(&p).unwrap();
    symlink(target, &p).unwrap();
}

/// Writes `root/run.json` (paths relative to it) and uses it instead of `--run`.
fn use_manifest(s: &Scene, c: &mut Call, text: &str) {
    let m = s.write("run.json", text);
    c.manifest(&m);
}

/// The valid manifest of the scene's run.
fn valid_manifest(s: &Scene, c: &mut Call) {
    use_manifest(s, c, &s.manifest_text());
}

/// Writes a manifest from a template where `{run}` is the run folder relative to it.
fn manifest_with(s: &Scene, c: &mut Call, template: &str) {
    use_manifest(s, c, &template.replace("{run}", "run"));
}

/// The scene's character device, given to `flag` (skips the case when none can be made).
fn device_out(s: &Scene, c: &mut Call, flag: &str) {
    match s.device(&s.out.join("null")) {
        Some(p) => {
            if !p.starts_with(&s.root) {
                c.watch.push(p.clone());
            }
            c.set(flag, p);
        }
        None => c.skip = Some("cannot make a device node here".into()),
    }
}

/// A symlink `out/NAME` to the scene's character device (skips when none can be made).
fn device_link(s: &Scene, c: &mut Call, name: &str) -> Option<std::path::PathBuf> {
    let Some(dev) = s.device(&s.out.join("null")) else {
        c.skip = Some("cannot make a device node here".into());
        return None;
    };
    if !dev.starts_with(&s.root) {
        c.watch.push(dev.clone());
    }
    let link = s.out.join(name);
    let _ = std::fs::remove_file(&link);
    symlink(&dev, &link).unwrap();
    Some(link)
}

/// `out/locked`, a folder without write permission holding an older file; skips the case
/// as root, where permissions do not stop writes.
fn locked(s: &Scene, c: &mut Call) -> Option<std::path::PathBuf> {
    if harness::is_root() {
        c.skip = Some("running as root: a read-only folder does not stop writes".into());
        return None;
    }
    let d = s.out.join("locked");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("older.txt"), harness::OLD).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o555)).unwrap();
    Some(d)
}

/// Gives the last checkpoint's feature files `images` (U8 `[N, 4, 4]`) and `--plot
/// out/plots` to the call; `f` then changes the training file's (`&mut St`).
fn plot_images(s: &Scene, c: &mut Call, f: impl Fn(&mut St)) {
    for (file, n) in [(tr("10"), 40), (te("10"), 7)] {
        edit(&s.f(&file), |st| {
            let pixels: Vec<u8> = (0..n * 16).map(|i| (i * 7 % 256) as u8).collect();
            st.put("images", "U8", &[n, 4, 4], pixels);
        });
    }
    edit(&s.f(&tr("10")), f);
    c.set("--plot", s.out.join("plots"));
}

fn mkdir(p: &Path) {
    let _ = std::fs::remove_file(p);
    std::fs::create_dir(p).unwrap();
}

fn replace_by_fifo(s: &Scene, p: &Path) {
    let _ = std::fs::remove_file(p);
    s.fifo(p);
}

fn alias_of_run(s: &Scene) -> std::path::PathBuf {
    let a = s.root.join("alias");
    symlink(&s.run, &a).unwrap();
    a
}

/// A complete run of one checkpoint `c` with `n` training and test examples of width
/// `d` (4 classes), replacing the fixture run.
fn small_run(s: &Scene, n: usize, d: usize) {
    sized_run(s, n, n, d);
}

/// A complete run of one checkpoint `c` with `n` training and `t` test examples of width
/// `d` (4 classes), replacing the fixture run.
fn sized_run(s: &Scene, n: usize, t: usize, d: usize) {
    for e in std::fs::read_dir(&s.run).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let mut w = St::default();
    w.put_f32(
        "fc3.weight",
        &[4, d],
        &(0..4 * d)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) / 10.0)
            .collect::<Vec<_>>(),
    );
    w.set_meta("learning_rate", "0.1");
    w.write(&s.f("c.safetensors"));
    for (split, seed, n) in [("train", 1usize, n), ("test", 2, t)] {
        let mut f = St::default();
        f.put_f32(
            "features",
            &[n, d],
            &(0..n * d)
                .map(|i| ((i * 7919 + seed) % 1000) as f32 / 1000.0)
                .collect::<Vec<_>>(),
        );
        f.put_i64(
            "labels",
            &[n],
            &(0..n as i64).map(|i| i % 4).collect::<Vec<_>>(),
        );
        f.write(&s.f(&format!("c.{split}.safetensors")));
    }
}

// ---------------------------------------------------------------------------------------
// Class 1: non-finite and overflowing inputs.

fn class1_entries() -> Vec<Entry> {
    vec![
        input(
            "NaN in training features",
            |s, _| set_f32(s, &tr("2"), "features", 3 * 8 + 4, f32::NAN),
            fails(&[
                "checkpoint-2.train.safetensors",
                "features",
                "NaN at [3, 4]",
            ]),
        ),
        input(
            "+inf in training features",
            |s, _| set_f32(s, &tr("2"), "features", 3 * 8 + 4, f32::INFINITY),
            fails(&[
                "checkpoint-2.train.safetensors",
                "features",
                "inf at [3, 4]",
            ]),
        ),
        input(
            "-inf in training features",
            |s, _| set_f32(s, &tr("2"), "features", 3 * 8 + 4, f32::NEG_INFINITY),
            fails(&[
                "checkpoint-2.train.safetensors",
                "features",
                "-inf at [3, 4]",
            ]),
        ),
        input(
            "NaN in test features",
            |s, _| set_f32(s, &te("2"), "features", 8 + 1, f32::NAN),
            fails(&["checkpoint-2.test.safetensors", "features", "NaN at [1, 1]"]),
        )
        .test_only(),
        input(
            "inf in test features",
            |s, _| set_f32(s, &te("10"), "features", 6 * 8 + 7, f32::INFINITY),
            fails(&[
                "checkpoint-10.test.safetensors",
                "features",
                "inf at [6, 7]",
            ]),
        )
        .test_only(),
        input(
            "NaN in the layer weight",
            |s, _| set_f32(s, &ck("10"), "fc3.weight", 5, f32::NAN),
            fails(&["checkpoint-10.safetensors", "fc3.weight", "NaN at [0, 5]"]),
        ),
        input(
            "inf in the layer weight",
            |s, _| set_f32(s, &ck("10"), "fc3.weight", 5, f32::INFINITY),
            fails(&["checkpoint-10.safetensors", "fc3.weight", "inf at [0, 5]"]),
        ),
        input(
            "-inf in the layer weight",
            |s, _| set_f32(s, &ck("1"), "fc3.weight", 31, f32::NEG_INFINITY),
            fails(&["checkpoint-1.safetensors", "fc3.weight", "-inf at [3, 7]"]),
        ),
        input(
            "NaN in the layer bias",
            |s, _| set_f32(s, &ck("1"), "fc3.bias", 2, f32::NAN),
            fails(&["checkpoint-1.safetensors", "fc3.bias", "NaN at [2]"]),
        ),
        input(
            "inf in the layer bias",
            |s, _| set_f32(s, &ck("2"), "fc3.bias", 0, f32::INFINITY),
            fails(&["checkpoint-2.safetensors", "fc3.bias", "inf at [0]"]),
        ),
        input(
            "NaN in training targets",
            |s, _| set_f32(s, &tr("1"), "targets", 4 * 4 + 2, f32::NAN),
            fails(&["checkpoint-1.train.safetensors", "targets", "NaN"]),
        ),
        input(
            "inf in test targets",
            |s, _| set_f32(s, &te("1"), "targets", 3, f32::INFINITY),
            fails(&["checkpoint-1.test.safetensors", "targets", "inf"]),
        )
        .test_only(),
        input(
            "training labels stored as floats",
            |s, _| {
                edit(&s.f(&tr("1")), |st| {
                    let l: Vec<f32> = st.i64s("labels").iter().map(|&x| x as f32).collect();
                    st.put_f32("labels", &[40], &l);
                })
            },
            fails(&["checkpoint-1.train.safetensors", "labels", "integer"]),
        ),
        input(
            "float training labels holding NaN",
            |s, _| {
                edit(&s.f(&tr("2")), |st| {
                    st.put_f32("labels", &[40], &[f32::NAN; 40]);
                })
            },
            fails(&["checkpoint-2.train.safetensors", "labels", "integer"]),
        ),
        input(
            "f64 test labels holding inf",
            |s, _| {
                edit(&s.f(&te("1")), |st| {
                    st.put_f64("labels", &[7], &[f64::INFINITY; 7]);
                })
            },
            fails(&["checkpoint-1.test.safetensors", "labels", "integer"]),
        )
        .test_only(),
        input(
            "f16 features holding NaN",
            |s, _| {
                edit(&s.f(&tr("2")), |st| {
                    let mut v = vec![0x3800u16; 40 * 8]; // 0.5
                    v[3 * 8 + 4] = 0x7E00;
                    st.put_f16_bits("features", &[40, 8], &v);
                })
            },
            fails(&[
                "checkpoint-2.train.safetensors",
                "features",
                "NaN at [3, 4]",
            ]),
        ),
        input(
            "bf16 features holding inf",
            |s, _| {
                edit(&s.f(&tr("1")), |st| {
                    let mut v = st.f32s("features");
                    v[3 * 8 + 4] = f32::INFINITY;
                    st.put_bf16("features", &[40, 8], &v);
                })
            },
            fails(&[
                "checkpoint-1.train.safetensors",
                "features",
                "inf at [3, 4]",
            ]),
        ),
        input(
            "f64 feature of 1e300 (finite, beyond f32)",
            |s, _| {
                edit(&s.f(&tr("2")), |st| {
                    let mut v: Vec<f64> = st.f32s("features").iter().map(|&x| x as f64).collect();
                    v[3 * 8 + 4] = 1e300;
                    st.put_f64("features", &[40, 8], &v);
                })
            },
            fails(&["checkpoint-2.train.safetensors", "features", "[3, 4]"]),
        ),
        input(
            "f64 weight of -1e300 (finite, beyond f32)",
            |s, _| {
                edit(&s.f(&ck("10")), |st| {
                    let mut v: Vec<f64> = st.f32s("fc3.weight").iter().map(|&x| x as f64).collect();
                    v[5] = -1e300;
                    st.put_f64("fc3.weight", &[4, 8], &v);
                })
            },
            fails(&["checkpoint-10.safetensors", "fc3.weight", "[0, 5]"]),
        ),
        input(
            "a training feature row of 3.4e38",
            |s, _| set_row(s, &tr("2"), "features", 5, f32::MAX),
            fails(&[
                "checkpoint-2.train.safetensors",
                "features",
                "example 5",
                "logits overflow",
            ]),
        ),
        input(
            "a training feature row of -3.4e38",
            |s, _| set_row(s, &tr("2"), "features", 5, -f32::MAX),
            fails(&[
                "checkpoint-2.train.safetensors",
                "features",
                "example 5",
                "logits overflow",
            ]),
        ),
        input(
            "a training feature row of 1e19 (its squared norm overflows)",
            |s, _| set_row(s, &tr("2"), "features", 5, 1e19),
            fails(&["train example 5 at checkpoint checkpoint-2", "‖a‖²"]),
        )
        .all_checkpoints(),
        input(
            "a test feature row of 1e19",
            |s, _| set_row(s, &te("2"), "features", 2, 1e19),
            fails(&["test example 2 at checkpoint checkpoint-2", "‖a‖²"]),
        )
        .all_checkpoints()
        .test_only(),
        input(
            "a test feature row of 3.4e38",
            |s, _| set_row(s, &te("10"), "features", 4, f32::MAX),
            fails(&[
                "checkpoint-10.test.safetensors",
                "example 4",
                "logits overflow",
            ]),
        )
        .test_only(),
        input(
            "features and weights of 1e20",
            |s, _| {
                for c in CKPTS {
                    fill(s, &tr(c), "features", 1e20);
                    fill(s, &te(c), "features", 1e20);
                    fill(s, &ck(c), "fc3.weight", 1e20);
                }
            },
            fails(&[
                "checkpoint-1.train.safetensors",
                "example 0",
                "logits overflow",
            ]),
        ),
        input(
            "learning rates whose weighted sum overflows (1e37 each)",
            |s, _| every(s, "", |st| st.set_meta("learning_rate", "1e37")),
            fails(&["train example", "all checkpoints", "overflow"]),
        )
        .all_checkpoints(),
        input(
            "MSE targets of 3.4e38 (the loss gradient overflows)",
            |s, c| {
                set_row(s, &tr("1"), "targets", 5, f32::MAX);
                c.set("--loss", "mse");
            },
            fails(&["checkpoint-1.train.safetensors", "targets", "example 5"]),
        ),
        input(
            "weights of 1e20 (huge logits, finite gradients)",
            |s, _| {
                every(s, "", |st| {
                    st.put_f32("fc3.weight", &[4, 8], &[1e20; 32]);
                })
            },
            Expect::Succeeds,
        ),
        input(
            "subnormal features (1e-45)",
            |s, _| {
                for c in CKPTS {
                    fill(s, &tr(c), "features", 1e-45);
                    fill(s, &te(c), "features", 1e-45);
                }
            },
            Expect::Succeeds,
        ),
    ]
    .into_iter()
    .map(Entry::gpu)
    .collect()
}

fn class1(with_gpu: bool) -> Vec<Case> {
    instantiate("class1", class1_entries(), with_gpu)
}

// ---------------------------------------------------------------------------------------
// Class 2: outputs that destroy things.

fn class2_entries() -> Vec<Entry> {
    vec![
        // --out of scores and topk.
        arg(
            "--out is a directory",
            OUT_FILE,
            |s, c| {
                let p = s.out.join("x.safetensors");
                mkdir(&p);
                c.set("--out", p);
            },
            fails(&["x.safetensors", "regular file"]),
        ),
        arg(
            "--out empty",
            OUT_FILE,
            |_, c| {
                c.set("--out", "");
            },
            fails(&["--out"]),
        ),
        arg(
            "--out is the working folder (.)",
            OUT_FILE,
            |_, c| {
                c.set("--out", ".");
            },
            fails(&["regular file"]),
        ),
        arg(
            "--out-dir empty",
            SELF,
            |_, c| {
                c.set("--out-dir", "");
            },
            fails(&["--out-dir"]),
        ),
        arg(
            "--out is a FIFO",
            OUT_FILE,
            |s, c| {
                let p = s.out.join("x.safetensors");
                replace_by_fifo(s, &p);
                c.set("--out", p);
            },
            fails(&["x.safetensors", "regular file"]),
        ),
        arg(
            "--out is a character device",
            OUT_FILE,
            |s, c| device_out(s, c, "--out"),
            fails(&["null", "regular file"]),
        ),
        arg(
            "--out is a symlink to a device",
            OUT_FILE,
            |s, c| {
                if let Some(l) = device_link(s, c, "link.safetensors") {
                    c.set("--out", l);
                }
            },
            fails(&["link.safetensors", "regular file"]),
        ),
        arg(
            "--out is the run's checkpoint",
            OUT_FILE,
            |s, c| {
                c.set("--out", s.f("checkpoint-1.safetensors"));
            },
            fails(&["checkpoint-1.safetensors", "is an input"]),
        ),
        arg(
            "--out is a training feature file",
            OUT_FILE,
            |s, c| {
                c.set("--out", s.f("checkpoint-2.train.safetensors"));
            },
            fails(&["checkpoint-2.train.safetensors", "is an input"]),
        ),
        arg(
            "--out is a test feature file",
            OUT_FILE,
            |s, c| {
                c.set("--out", s.f("checkpoint-10.test.safetensors"));
            },
            fails(&["checkpoint-10.test.safetensors", "is an input"]),
        ),
        arg(
            "--out is an input by another path (run/../run/...)",
            OUT_FILE,
            |s, c| {
                c.set("--out", s.root.join("run/../run/checkpoint-1.safetensors"));
            },
            fails(&["is an input"]),
        ),
        arg(
            "--out is an input through a symlinked folder",
            OUT_FILE,
            |s, c| {
                let a = alias_of_run(s);
                c.set("--out", a.join("checkpoint-2.safetensors"));
            },
            fails(&["is an input"]),
        ),
        arg(
            "--out is a relative path to an input",
            OUT_FILE,
            |_, c| {
                c.set("--out", "run/checkpoint-10.train.safetensors");
            },
            fails(&["checkpoint-10.train.safetensors", "is an input"]),
        ),
        arg(
            "--out is the manifest",
            OUT_FILE,
            |s, c| {
                valid_manifest(s, c);
                c.set("--out", s.root.join("run.json"));
            },
            fails(&["run.json", "is an input"]),
        ),
        arg(
            "--out is a file the manifest lists",
            OUT_FILE,
            |s, c| {
                valid_manifest(s, c);
                c.set("--out", "run/checkpoint-2.test.safetensors");
            },
            fails(&["checkpoint-2.test.safetensors", "is an input"]),
        ),
        arg(
            "a new .safetensors --out inside the run folder",
            OUT_FILE,
            |s, c| {
                c.set("--out", s.f("new.safetensors"));
            },
            fails(&["new.safetensors", "inside the run folder"]),
        ),
        arg(
            "a new .safetensors --out inside the run folder, relative",
            OUT_FILE,
            |_, c| {
                c.set("--out", "run/./new.safetensors");
            },
            fails(&["new.safetensors", "inside the run folder"]),
        ),
        arg(
            "--out in a missing folder (created)",
            OUT_FILE,
            |s, c| {
                c.set("--out", s.out.join("new-folder/deeper/x.safetensors"));
            },
            Expect::Succeeds,
        ),
        arg(
            "a bad input with --out in a missing folder (no folder is left)",
            OUT_FILE,
            |s, c| {
                set_f32(s, &tr("2"), "features", 0, f32::NAN);
                c.set("--out", s.out.join("new-folder/deeper/x.safetensors"));
            },
            fails(&["checkpoint-2.train.safetensors", "NaN"]),
        ),
        arg(
            "--out is a symlink to an input",
            OUT_FILE,
            |s, c| {
                let l = s.out.join("link.safetensors");
                symlink(s.f(&ck("1")), &l).unwrap();
                c.set("--out", l);
            },
            fails(&["link.safetensors", "is an input"]),
        ),
        arg(
            "--out is a hard link to an input",
            OUT_FILE,
            |s, c| {
                let l = s.out.join("hard.safetensors");
                std::fs::hard_link(s.f(&tr("2")), &l).unwrap();
                c.set("--out", l);
            },
            fails(&["hard.safetensors", "is an input"]),
        ),
        arg(
            "--out in a read-only folder",
            OUT_FILE,
            |s, c| {
                if let Some(d) = locked(s, c) {
                    c.set("--out", d.join("x.safetensors"));
                }
            },
            fails(&["locked"]),
        ),
        arg(
            "an older result is replaced",
            SUBS,
            |_, _| {},
            Expect::Succeeds,
        ),
        arg(
            "a relative --out",
            OUT_FILE,
            |_, c| {
                c.set("--out", "rel.safetensors");
            },
            Expect::Succeeds,
        ),
        arg(
            "--out with a non-UTF-8 name",
            OUT_FILE,
            |s, c| {
                c.set(
                    "--out",
                    s.out.join(OsStr::from_bytes(b"r\xffs.safetensors")),
                );
            },
            Expect::Succeeds,
        ),
        arg(
            "--out left to its default (the working folder)",
            OUT_FILE,
            |_, c| {
                c.unset("--out");
            },
            Expect::Succeeds,
        ),
        // topk --json: a two-file result, published all or nothing.
        arg(
            "--json empty",
            TOPK,
            |_, c| {
                c.set("--json", "");
            },
            fails(&["--json"]),
        ),
        arg(
            "--json is --out",
            TOPK,
            |_, c| {
                let o = c.get("--out").unwrap().to_os_string();
                c.set("--json", o);
            },
            fails(&["same file"]),
        ),
        arg(
            "--json is --out by another path",
            TOPK,
            |s, c| {
                c.set("--json", s.out.join(".").join("topk.safetensors"));
            },
            fails(&["same file"]),
        ),
        arg(
            "--json is a directory",
            TOPK,
            |s, c| {
                let p = s.out.join("j.json");
                mkdir(&p);
                c.set("--json", p);
            },
            fails(&["j.json", "regular file"]),
        ),
        arg(
            "--json is a FIFO",
            TOPK,
            |s, c| {
                let p = s.out.join("j.json");
                replace_by_fifo(s, &p);
                c.set("--json", p);
            },
            fails(&["j.json", "regular file"]),
        ),
        arg(
            "--json is a character device",
            TOPK,
            |s, c| device_out(s, c, "--json"),
            fails(&["null", "regular file"]),
        ),
        arg(
            "--json in a missing folder (created)",
            TOPK,
            |s, c| {
                c.set("--json", s.out.join("new-folder/t.json"));
            },
            Expect::Succeeds,
        ),
        arg(
            "--json is a directory, --out in a missing folder (no folder is left)",
            TOPK,
            |s, c| {
                let p = s.out.join("j.json");
                mkdir(&p);
                c.set("--json", p)
                    .set("--out", s.out.join("new-folder/topk.safetensors"));
            },
            fails(&["j.json", "regular file"]),
        ),
        arg(
            "--json is a symlink to an input",
            TOPK,
            |s, c| {
                let l = s.out.join("link.json");
                symlink(s.f(&te("1")), &l).unwrap();
                c.set("--json", l);
            },
            fails(&["link.json", "is an input"]),
        ),
        arg(
            "--json is an input",
            TOPK,
            |s, c| {
                c.set("--json", s.f("checkpoint-1.train.safetensors"));
            },
            fails(&["checkpoint-1.train.safetensors", "is an input"]),
        ),
        arg(
            "--json is the manifest",
            TOPK,
            |s, c| {
                valid_manifest(s, c);
                c.set("--json", s.root.join("run.json"));
            },
            fails(&["run.json", "is an input"]),
        ),
        arg(
            "--json in a read-only folder (--out must not be published)",
            TOPK,
            |s, c| {
                if let Some(d) = locked(s, c) {
                    c.set("--json", d.join("t.json"));
                }
            },
            fails(&["locked"]),
        ),
        arg(
            "--json left out",
            TOPK,
            |_, c| {
                c.unset("--json");
            },
            Expect::Succeeds,
        ),
        // self-influence --out-dir: a three-file result, published all or nothing.
        arg(
            "--out-dir is the run folder",
            SELF,
            |s, c| {
                c.set("--out-dir", &s.run);
            },
            fails(&["inside the run folder"]),
        ),
        arg(
            "--out-dir is the run folder by another path (run/.)",
            SELF,
            |_, c| {
                c.set("--out-dir", "run/.");
            },
            fails(&["inside the run folder"]),
        ),
        arg(
            "--out-dir is the run folder through a symlink",
            SELF,
            |s, c| {
                let a = alias_of_run(s);
                c.set("--out-dir", a);
            },
            fails(&["inside the run folder"]),
        ),
        arg(
            "--out-dir is a regular file",
            SELF,
            |s, c| {
                let p = s.write("out/not-a-folder", "x");
                c.set("--out-dir", p);
            },
            fails(&["not-a-folder"]),
        ),
        arg(
            "--out-dir is a FIFO",
            SELF,
            |s, c| {
                let p = s.out.join("fifo-folder");
                s.fifo(&p);
                c.set("--out-dir", p);
            },
            fails(&["fifo-folder"]),
        ),
        arg(
            "self_influence.safetensors is a directory",
            SELF,
            |s, _| mkdir(&s.out.join("self_influence.safetensors")),
            fails(&["self_influence.safetensors", "directory"]),
        ),
        arg(
            "suspicious.csv is a directory",
            SELF,
            |s, _| mkdir(&s.out.join("suspicious.csv")),
            fails(&["suspicious.csv", "directory"]),
        ),
        arg(
            "suspicious.json is a directory",
            SELF,
            |s, _| mkdir(&s.out.join("suspicious.json")),
            fails(&["suspicious.json", "directory"]),
        ),
        arg(
            "suspicious.csv is a FIFO",
            SELF,
            |s, _| replace_by_fifo(s, &s.out.join("suspicious.csv")),
            fails(&["suspicious.csv", "regular file"]),
        ),
        arg(
            "suspicious.json is a symlink to a device",
            SELF,
            |s, c| {
                device_link(s, c, "suspicious.json");
            },
            fails(&["suspicious.json", "regular file"]),
        ),
        arg(
            "the manifest is the out-dir's suspicious.json",
            SELF,
            |s, c| {
                let text = s
                    .manifest_text()
                    .replace("\"run/", &format!("\"{}/", s.run.display()));
                let m = s.write("out/suspicious.json", text);
                c.manifest(&m);
            },
            fails(&["suspicious.json", "is an input"]),
        ),
        arg(
            "a feature file of the manifest is the out-dir's self_influence.safetensors",
            SELF,
            |s, c| {
                std::fs::copy(s.f(&tr("1")), s.out.join("self_influence.safetensors")).unwrap();
                manifest_with(
                    s,
                    c,
                    r#"{"checkpoints": [
                    {"checkpoint": "{run}/checkpoint-1.safetensors", "train": "out/self_influence.safetensors"}]}"#,
                );
            },
            fails(&["self_influence.safetensors", "is an input"]),
        ),
        arg(
            "--out-dir in a read-only folder",
            SELF,
            |s, c| {
                if let Some(d) = locked(s, c) {
                    c.set("--out-dir", d);
                }
            },
            fails(&["locked"]),
        ),
        arg(
            "suspicious.csv is a symlink to an input",
            SELF,
            |s, _| {
                let l = s.out.join("suspicious.csv");
                std::fs::remove_file(&l).unwrap();
                symlink(s.f(&tr("10")), &l).unwrap();
            },
            fails(&["suspicious.csv", "is an input"]),
        ),
        arg(
            "a bad input with --out-dir missing (no folder is left)",
            SELF,
            |s, c| {
                set_f32(s, &tr("2"), "features", 0, f32::NAN);
                c.set("--out-dir", s.out.join("new/deeper"));
            },
            fails(&["checkpoint-2.train.safetensors", "NaN"]),
        ),
        arg(
            "--out-dir is created when missing",
            SELF,
            |s, c| {
                c.set("--out-dir", s.out.join("new/deeper"));
            },
            Expect::Succeeds,
        ),
        arg(
            "--out-dir left to its default (the working folder)",
            SELF,
            |_, c| {
                c.unset("--out-dir");
            },
            Expect::Succeeds,
        ),
    ]
}

/// Signals at several points of a run large enough to take a moment: whatever the
/// moment, the result set is complete or absent and no temporary file stays.
fn interrupts() -> Vec<Case> {
    let method = methods()[0];
    let mut cases = Vec::new();
    for &sub in SUBS {
        for (sig, ms) in [
            ("INT", 10),
            ("INT", 60),
            ("INT", 200),
            ("TERM", 30),
            ("TERM", 120),
            ("HUP", 90),
        ] {
            cases.push(Case::new(
                format!("class2/{sub}/{method}/cpu: SIG{sig} after {ms} ms"),
                move |s| {
                    sized_run(s, INTERRUPTED_TRAIN, 300, 64);
                    let mut c = Call::scoring(s, sub, method, "cpu");
                    c.signal = Some((sig, std::time::Duration::from_millis(ms)));
                    c
                },
                Expect::Interrupted,
            ));
        }
    }
    cases
}

/// Training examples of the interrupted runs.
const INTERRUPTED_TRAIN: usize = 100_000;

fn class2() -> Vec<Case> {
    let mut cases = instantiate("class2", class2_entries(), false);
    cases.extend(interrupts());
    cases.extend([
        demo(
            "class2",
            "--out is a regular file",
            |s, c| {
                let p = s.write("out/demo-file", "x");
                c.set("--out", p);
            },
            fails(&["--out", "demo-file"]),
        ),
        demo(
            "class2",
            "--out is a FIFO",
            |s, c| {
                let p = s.out.join("demo-fifo");
                s.fifo(&p);
                c.set("--out", p);
            },
            fails(&["--out", "demo-fifo"]),
        ),
        demo(
            "class2",
            "--out in a read-only folder",
            |s, c| {
                if let Some(d) = locked(s, c) {
                    c.set("--out", d.join("demo"));
                }
            },
            fails(&["locked"]),
        ),
        demo(
            "class2",
            "an earlier run is replaced",
            |_, _| {},
            Expect::Succeeds,
        ),
    ]);
    cases
}

// ---------------------------------------------------------------------------------------
// Class 3: unbounded resources.

fn class3_entries() -> Vec<Entry> {
    vec![
        arg(
            "--threads 0",
            SUBS,
            |_, c| {
                c.set("--threads", "0");
            },
            fails(&["--threads"]),
        ),
        arg(
            "--threads 100000",
            SUBS,
            |_, c| {
                c.set("--threads", "100000");
            },
            fails(&["--threads"]),
        ),
        arg(
            "--threads 18446744073709551615",
            SUBS,
            |_, c| {
                c.set("--threads", "18446744073709551615");
            },
            fails(&["--threads"]),
        ),
        arg(
            "--threads 18446744073709551616",
            SUBS,
            |_, c| {
                c.set("--threads", "18446744073709551616");
            },
            fails(&["--threads"]),
        ),
        arg(
            "--threads -1",
            SUBS,
            |_, c| {
                c.set("--threads", "-1");
            },
            fails(&["--threads"]),
        ),
        arg(
            "--threads 1",
            SUBS,
            |_, c| {
                c.set("--threads", "1");
            },
            Expect::Succeeds,
        ),
        arg(
            "--threads 64 (always within the limit)",
            SUBS,
            |_, c| {
                c.set("--threads", "64");
            },
            Expect::Succeeds,
        ),
        arg(
            "-k 0",
            TOPK,
            |_, c| {
                c.set("-k", "0");
            },
            fails(&["k = 0", "40"]),
        ),
        arg(
            "-k larger than the training set",
            TOPK,
            |_, c| {
                c.set("-k", "41");
            },
            fails(&["k = 41", "40"]),
        ),
        arg(
            "-k 18446744073709551615",
            TOPK,
            |_, c| {
                c.set("-k", "18446744073709551615");
            },
            fails(&["k = 18446744073709551615", "40"]),
        ),
        arg(
            "-k 18446744073709551616",
            TOPK,
            |_, c| {
                c.set("-k", "18446744073709551616");
            },
            fails(&["-k"]),
        ),
        arg(
            "-k equal to the training set",
            TOPK,
            |_, c| {
                c.set("-k", "40");
            },
            Expect::Succeeds,
        ),
        arg(
            "-k 1",
            TOPK,
            |_, c| {
                c.set("-k", "1");
            },
            Expect::Succeeds,
        ),
        arg(
            "--top 18446744073709551615 (clamped)",
            SELF,
            |_, c| {
                c.set("--top", "18446744073709551615");
            },
            Expect::Succeeds,
        ),
        arg(
            "--top 0 (all)",
            SELF,
            |_, c| {
                c.set("--top", "0");
            },
            Expect::Succeeds,
        ),
        arg(
            "--top larger than the training set",
            SELF,
            |_, c| {
                c.set("--top", "41");
            },
            Expect::Succeeds,
        ),
        arg(
            "a score matrix larger than memory (400k x 400k)",
            SCORES,
            |s, _| small_run(s, 400_000, 1),
            fails(&["score matrix", "infl topk"]),
        ),
        input(
            "a FIFO as a training feature file",
            |s, _| fifo_at(s, &tr("2")),
            fails(&["checkpoint-2.train.safetensors", "special file"]),
        ),
        input(
            "a FIFO as a checkpoint",
            |s, _| fifo_at(s, &ck("1")),
            fails(&["checkpoint-1.safetensors", "special file"]),
        ),
        input(
            "a FIFO as a test feature file",
            |s, _| fifo_at(s, &te("2")),
            fails(&["checkpoint-2.test.safetensors", "special file"]),
        )
        .test_only(),
        input(
            "a directory as a training feature file",
            |s, _| dir_at(s, &tr("2")),
            fails(&["checkpoint-2.train.safetensors", "is a directory"]),
        ),
        input(
            "a directory as a checkpoint",
            |s, _| dir_at(s, &ck("10")),
            fails(&["checkpoint-10.safetensors", "is a directory"]),
        ),
        input(
            "a symlink to /dev/zero as a checkpoint",
            |s, _| link_at(s, &ck("2"), "/dev/zero"),
            fails(&["checkpoint-2.safetensors", "special file"]),
        ),
        input(
            "a symlink to /dev/urandom as a training feature file",
            |s, _| link_at(s, &tr("1"), "/dev/urandom"),
            fails(&["checkpoint-1.train.safetensors", "special file"]),
        ),
        input(
            "a dangling symlink as a training feature file",
            |s, _| link_at(s, &tr("1"), "/nonexistent/x"),
            fails(&["checkpoint-1.train.safetensors"]),
        ),
        input(
            "a symlink loop as a checkpoint",
            |s, _| link_at(s, &ck("1"), "checkpoint-1.safetensors"),
            fails(&["checkpoint-1.safetensors"]),
        ),
        input(
            "a checkpoint reached through a symlink",
            |s, _| {
                let elsewhere = s.root.join("elsewhere.safetensors");
                std::fs::copy(s.f(&ck("2")), &elsewhere).unwrap();
                link_at(s, &ck("2"), &elsewhere);
            },
            Expect::Succeeds,
        ),
    ]
}

fn class3() -> Vec<Case> {
    let mut cases = instantiate("class3", class3_entries(), false);
    let d = |what: &'static str, apply: fn(&Scene, &mut Call), expect| {
        demo("class3", what, apply, expect)
    };
    cases.extend([
        d(
            "--threads 0",
            |_, c| {
                c.set("--threads", "0");
            },
            fails(&["--threads"]),
        ),
        d(
            "--threads 100000",
            |_, c| {
                c.set("--threads", "100000");
            },
            fails(&["--threads"]),
        ),
        d(
            "--threads 18446744073709551615",
            |_, c| {
                c.set("--threads", "18446744073709551615");
            },
            fails(&["--threads"]),
        ),
        d(
            "--hidden 100000000",
            |_, c| {
                c.set("--hidden", "100000000");
            },
            fails(&["--hidden"]),
        ),
        d(
            "--hidden 18446744073709551615",
            |_, c| {
                c.set("--hidden", "18446744073709551615");
            },
            fails(&["--hidden"]),
        ),
        d(
            "--hidden 0",
            |_, c| {
                c.set("--hidden", "0");
            },
            fails(&["--hidden"]),
        ),
        d(
            "--hidden 8,0",
            |_, c| {
                c.set("--hidden", "8,0");
            },
            fails(&["--hidden"]),
        ),
        d(
            "--hidden empty",
            |_, c| {
                c.set("--hidden", "");
            },
            fails(&["--hidden"]),
        ),
        d(
            "--hidden abc",
            |_, c| {
                c.set("--hidden", "abc");
            },
            fails(&["--hidden"]),
        ),
        d(
            "--batch-size 0",
            |_, c| {
                c.set("--batch-size", "0");
            },
            fails(&["--batch-size"]),
        ),
        d(
            "--batch-size 18446744073709551615",
            |_, c| {
                c.set("--batch-size", "18446744073709551615");
            },
            fails(&["--batch-size"]),
        ),
        d(
            "--epochs 0",
            |_, c| {
                c.set("--epochs", "0");
            },
            fails(&["--epochs"]),
        ),
        d(
            "--noise 1.5",
            |_, c| {
                c.set("--noise", "1.5");
            },
            fails(&["--noise"]),
        ),
        d(
            "--noise 1",
            |_, c| {
                c.set("--noise", "1");
            },
            fails(&["--noise"]),
        ),
        d(
            "--noise -0.1",
            |_, c| {
                c.set("--noise", "-0.1");
            },
            fails(&["--noise"]),
        ),
        d(
            "--noise nan",
            |_, c| {
                c.set("--noise", "nan");
            },
            fails(&["--noise"]),
        ),
        d(
            "--noise inf",
            |_, c| {
                c.set("--noise", "inf");
            },
            fails(&["--noise"]),
        ),
        d(
            "--train 0",
            |_, c| {
                c.set("--train", "0");
            },
            fails(&["--train"]),
        ),
        d(
            "--test 0",
            |_, c| {
                c.set("--test", "0");
            },
            fails(&["--test"]),
        ),
        d(
            "--train 18446744073709551615 (all there are)",
            |_, c| {
                c.set("--train", "18446744073709551615")
                    .set("--mnist-dir", "mnist");
            },
            Expect::Succeeds,
        ),
        d(
            "--seed 18446744073709551615",
            |_, c| {
                c.set("--seed", "18446744073709551615");
            },
            Expect::Succeeds,
        ),
    ]);
    // The --train case reads the scene's tiny MNIST folder: make it.
    for c in cases
        .iter_mut()
        .filter(|c| c.name.contains("--train 18446744073709551615"))
    {
        let build = c.build.clone();
        c.build = std::sync::Arc::new(move |s: &Scene| {
            s.mnist();
            build(s)
        });
    }
    cases
}

// ---------------------------------------------------------------------------------------
// Class 4: degenerate parameters.

fn class4_entries() -> Vec<Entry> {
    vec![
        input(
            "a layer with zero outputs",
            |s, _| {
                every(s, "", |st| {
                    st.put_f32("fc3.weight", &[0, 8], &[]);
                    st.put_f32("fc3.bias", &[0], &[]);
                })
            },
            fails(&["checkpoint-1.safetensors", "fc3.weight", "no outputs"]),
        ),
        input(
            "features and layer with zero columns",
            |s, _| {
                every(s, "", |st| st.put_f32("fc3.weight", &[4, 0], &[]));
                every(s, "train", |st| st.put_f32("features", &[40, 0], &[]));
                every(s, "test", |st| st.put_f32("features", &[7, 0], &[]));
            },
            fails(&["no columns"]),
        ),
        input(
            "training features with zero columns",
            |s, _| edit(&s.f(&tr("2")), |st| st.put_f32("features", &[40, 0], &[])),
            fails(&["checkpoint-2.train.safetensors", "features"]),
        ),
        input(
            "duplicate ids in the training set",
            |s, _| every(s, "train", |st| ints(st, "ids", |v| v[7] = v[3])),
            fails(&["checkpoint-1.train.safetensors", "duplicate id"]),
        ),
        input(
            "duplicate ids in the test set",
            |s, _| every(s, "test", |st| ints(st, "ids", |v| v[6] = v[0])),
            fails(&["checkpoint-1.test.safetensors", "duplicate id"]),
        )
        .test_only(),
        input(
            "learning rate 0 in metadata",
            |s, _| edit(&s.f(&ck("2")), |st| st.set_meta("learning_rate", "0")),
            fails(&[
                "checkpoint-2.safetensors",
                "learning_rate",
                "positive learning rate",
            ]),
        ),
        input(
            "learning rate -0 in metadata",
            |s, _| edit(&s.f(&ck("2")), |st| st.set_meta("learning_rate", "-0")),
            fails(&[
                "checkpoint-2.safetensors",
                "learning_rate",
                "positive learning rate",
            ]),
        ),
        input(
            "learning rate -0.2 in metadata",
            |s, _| edit(&s.f(&ck("2")), |st| st.set_meta("learning_rate", "-0.2")),
            fails(&[
                "checkpoint-2.safetensors",
                "learning_rate",
                "positive learning rate",
            ]),
        ),
        input(
            "learning rate 1e39 in metadata",
            |s, _| edit(&s.f(&ck("10")), |st| st.set_meta("learning_rate", "1e39")),
            fails(&["checkpoint-10.safetensors", "learning_rate"]),
        ),
        input(
            "learning rate nan in metadata",
            |s, _| edit(&s.f(&ck("1")), |st| st.set_meta("learning_rate", "nan")),
            fails(&["checkpoint-1.safetensors", "learning_rate"]),
        ),
        input(
            "learning rate inf in metadata",
            |s, _| edit(&s.f(&ck("1")), |st| st.set_meta("learning_rate", "inf")),
            fails(&["checkpoint-1.safetensors", "learning_rate"]),
        ),
        input(
            "learning rate that is not a number in metadata",
            |s, _| edit(&s.f(&ck("1")), |st| st.set_meta("learning_rate", "fast")),
            fails(&["checkpoint-1.safetensors", "learning_rate"]),
        ),
        input(
            "learning rate empty in metadata",
            |s, _| edit(&s.f(&ck("1")), |st| st.set_meta("learning_rate", "")),
            fails(&["checkpoint-1.safetensors", "learning_rate"]),
        ),
        input(
            "learning rate 0 in a manifest",
            |s, c| {
                manifest_with(
                    s,
                    c,
                    r#"{"checkpoints": [
                {"checkpoint": "{run}/checkpoint-1.safetensors", "train": "{run}/checkpoint-1.train.safetensors",
                 "test": "{run}/checkpoint-1.test.safetensors", "learning_rate": 0}]}"#,
                )
            },
            fails(&["run.json", "learning_rate", "positive learning rate"]),
        ),
        input(
            "learning rate -1 in a manifest",
            |s, c| {
                manifest_with(
                    s,
                    c,
                    r#"{"checkpoints": [
                {"checkpoint": "{run}/checkpoint-1.safetensors", "train": "{run}/checkpoint-1.train.safetensors",
                 "test": "{run}/checkpoint-1.test.safetensors", "learning_rate": -1.0}]}"#,
                )
            },
            fails(&["run.json", "learning_rate", "positive learning rate"]),
        ),
        input(
            "learning rate 1e39 in a manifest",
            |s, c| {
                manifest_with(
                    s,
                    c,
                    r#"{"checkpoints": [
                {"checkpoint": "{run}/checkpoint-1.safetensors", "train": "{run}/checkpoint-1.train.safetensors",
                 "test": "{run}/checkpoint-1.test.safetensors", "learning_rate": 1e39}]}"#,
                )
            },
            fails(&["run.json", "learning_rate"]),
        ),
        input(
            "learning rate 1e-50 in a manifest (zero in f32)",
            |s, c| {
                manifest_with(
                    s,
                    c,
                    r#"{"checkpoints": [
                {"checkpoint": "{run}/checkpoint-1.safetensors", "train": "{run}/checkpoint-1.train.safetensors",
                 "test": "{run}/checkpoint-1.test.safetensors", "learning_rate": 1e-50}]}"#,
                )
            },
            fails(&["run.json", "learning_rate"]),
        ),
        input(
            "learning rate NaN in a manifest (not JSON)",
            |s, c| {
                manifest_with(
                    s,
                    c,
                    r#"{"checkpoints": [
                {"checkpoint": "{run}/checkpoint-1.safetensors", "train": "{run}/checkpoint-1.train.safetensors",
                 "learning_rate": NaN}]}"#,
                )
            },
            fails(&["run.json"]),
        ),
        input(
            "learning rate as a string in a manifest",
            |s, c| {
                manifest_with(
                    s,
                    c,
                    r#"{"checkpoints": [
                {"checkpoint": "{run}/checkpoint-1.safetensors", "train": "{run}/checkpoint-1.train.safetensors",
                 "learning_rate": "0.1"}]}"#,
                )
            },
            fails(&["run.json", "learning_rate"]),
        ),
        input(
            "--learning-rate 0",
            |_, c| {
                c.set("--learning-rate", "0");
            },
            fails(&["--learning-rate", "positive learning rate"]),
        ),
        input(
            "--learning-rate -1",
            |_, c| {
                c.set("--learning-rate", "-1");
            },
            fails(&["--learning-rate", "positive learning rate"]),
        ),
        input(
            "--learning-rate 1e39",
            |_, c| {
                c.set("--learning-rate", "1e39");
            },
            fails(&["--learning-rate"]),
        ),
        input(
            "--learning-rate nan",
            |_, c| {
                c.set("--learning-rate", "nan");
            },
            fails(&["--learning-rate"]),
        ),
        input(
            "--learning-rate inf",
            |_, c| {
                c.set("--learning-rate", "inf");
            },
            fails(&["--learning-rate"]),
        ),
        input(
            "no learning rate anywhere (the default 1.0)",
            |s, _| {
                every(s, "", |st| {
                    st.metadata.remove("learning_rate");
                })
            },
            Expect::Succeeds,
        ),
        input(
            "an empty training split",
            |s, _| {
                every(s, "train", |st| {
                    st.put_f32("features", &[0, 8], &[]);
                    st.put_i64("labels", &[0], &[]);
                    st.put_f32("targets", &[0, 4], &[]);
                    st.put_i64("ids", &[0], &[]);
                })
            },
            fails(&["checkpoint-1.train.safetensors", "empty split"]),
        ),
        input(
            "an empty test split",
            |s, _| {
                every(s, "test", |st| {
                    st.put_f32("features", &[0, 8], &[]);
                    st.put_i64("labels", &[0], &[]);
                    st.put_f32("targets", &[0, 4], &[]);
                    st.put_i64("ids", &[0], &[]);
                })
            },
            fails(&["checkpoint-1.test.safetensors", "empty split"]),
        )
        .test_only(),
        input(
            "a single training and test example",
            |s, c| {
                small_run(s, 1, 3);
                if c.sub == "topk" {
                    c.set("-k", "1");
                }
            },
            Expect::Succeeds,
        ),
        input(
            "no labels (cross-entropy)",
            |s, _| every(s, "train", |st| st.remove("labels")),
            fails(&["checkpoint-1.train.safetensors", "labels"]),
        ),
        input(
            "no targets with --loss mse",
            |s, c| {
                every(s, "train", |st| st.remove("targets"));
                c.set("--loss", "mse");
            },
            fails(&["checkpoint-1.train.safetensors", "targets"]),
        ),
        input(
            "targets of the wrong width with --loss mse",
            |s, c| {
                edit(&s.f(&tr("1")), |st| {
                    st.put_f32("targets", &[40, 3], &[0.0; 120])
                });
                c.set("--loss", "mse");
            },
            fails(&["checkpoint-1.train.safetensors", "targets", "[40, 3]"]),
        ),
        input(
            "ids beyond i64 (u64)",
            |s, _| {
                every(s, "train", |st| {
                    let mut v: Vec<u8> = (0u64..40).flat_map(|i| i.to_le_bytes()).collect();
                    v[..8].copy_from_slice(&u64::MAX.to_le_bytes());
                    st.put("ids", "U64", &[40], v);
                })
            },
            fails(&["checkpoint-1.train.safetensors", "ids"]),
        ),
        input(
            "float ids",
            |s, _| every(s, "train", |st| st.put_f32("ids", &[40], &[1.0; 40])),
            fails(&["checkpoint-1.train.safetensors", "ids", "integer"]),
        ),
        input(
            "--loss mse",
            |_, c| {
                c.set("--loss", "mse");
            },
            Expect::Succeeds,
        ),
        input(
            "--loss mse --reduction mean",
            |_, c| {
                c.set("--loss", "mse").set("--reduction", "mean");
            },
            Expect::Succeeds,
        ),
        arg(
            "--include-bias",
            SUBS,
            |_, c| {
                c.switch("--include-bias");
            },
            Expect::Succeeds,
        ),
        arg(
            "--include-bias with tracincp-fast-rand-proj (Captum leaves the bias out)",
            SUBS,
            |_, c| {
                c.set("--method", "tracincp-fast-rand-proj")
                    .switch("--include-bias");
            },
            fails(&["--include-bias", "tracincp-fast-rand-proj"]),
        ),
        arg(
            "--projection-dim 0",
            SUBS,
            |_, c| {
                c.set("--method", "tracincp-fast-rand-proj")
                    .set("--projection-dim", "0");
            },
            fails(&["--projection-dim", "0"]),
        ),
        arg(
            "--projection-dim -5",
            SUBS,
            |_, c| {
                c.set("--method", "tracincp-fast-rand-proj")
                    .set("--projection-dim", "-5");
            },
            fails(&["--projection-dim"]),
        ),
        arg(
            "--projection-dim 18446744073709551615",
            SUBS,
            |_, c| {
                c.set("--method", "tracincp-fast-rand-proj")
                    .set("--projection-dim", "18446744073709551615");
            },
            fails(&["--projection-dim"]),
        ),
        arg(
            "--projection-dim 1 (one column per factor)",
            SUBS,
            |_, c| {
                c.set("--method", "tracincp-fast-rand-proj")
                    .set("--projection-dim", "1");
            },
            Expect::Succeeds,
        ),
        arg(
            "--projection-dim with tracincp-fast",
            SUBS,
            |_, c| {
                c.set("--method", "tracincp-fast")
                    .set("--projection-dim", "16");
            },
            fails(&["--projection-dim", "tracincp-fast-rand-proj"]),
        ),
        arg(
            "--seed with tracincp-fast",
            SUBS,
            |_, c| {
                c.set("--method", "tracincp-fast").set("--seed", "3");
            },
            fails(&["--seed", "tracincp-fast-rand-proj"]),
        ),
        arg(
            "--shard 3/2",
            SUBS,
            |_, c| {
                c.set("--shard", "3/2");
            },
            fails(&["--shard", "3/2", "1 <= i <= N"]),
        ),
        arg(
            "--shard 0/4",
            SUBS,
            |_, c| {
                c.set("--shard", "0/4");
            },
            fails(&["--shard", "0/4", "shards count from 1"]),
        ),
        arg(
            "--shard 3 (no count)",
            SUBS,
            |_, c| {
                c.set("--shard", "3");
            },
            fails(&["--shard", "expected i/N"]),
        ),
        arg(
            "--shard 41/41: more shards than training examples",
            SUBS,
            |_, c| {
                // Without the flags a shard refuses on its own (--json, --top).
                c.unset("--json").unset("--top").set("--shard", "41/41");
            },
            fails(&["41 shards of 40 training examples", "at most 40 shards"]),
        ),
        arg(
            "--shard with influence functions (a fit over every training row)",
            SUBS,
            |_, c| {
                c.unset("--json").unset("--top");
                c.set("--method", "influence").set("--shard", "1/2");
            },
            fails(&["--shard 1/2", "--method influence", "whole training set"]),
        ),
        arg(
            "--json with --shard",
            TOPK,
            |s, c| {
                c.set("--shard", "1/2")
                    .set("--json", s.root.join("out/top.json"));
            },
            fails(&["--json", "infl merge --json"]),
        ),
        arg(
            "--top with --shard",
            SELF,
            |_, c| {
                c.set("--shard", "1/2").set("--top", "5");
            },
            fails(&["--top", "infl merge"]),
        ),
    ]
}

fn class4() -> Vec<Case> {
    let mut cases = instantiate("class4", class4_entries(), false);
    let d = |what: &'static str, apply: fn(&Scene, &mut Call), expect| {
        demo("class4", what, apply, expect)
    };
    cases.extend([
        d(
            "--lr 0",
            |_, c| {
                c.set("--lr", "0");
            },
            fails(&["--lr"]),
        ),
        d(
            "--lr -1",
            |_, c| {
                c.set("--lr", "-1");
            },
            fails(&["--lr"]),
        ),
        d(
            "--lr nan",
            |_, c| {
                c.set("--lr", "nan");
            },
            fails(&["--lr"]),
        ),
        d(
            "--lr inf",
            |_, c| {
                c.set("--lr", "inf");
            },
            fails(&["--lr"]),
        ),
        d(
            "--momentum 1",
            |_, c| {
                c.set("--momentum", "1");
            },
            fails(&["--momentum"]),
        ),
        d(
            "--momentum -0.5",
            |_, c| {
                c.set("--momentum", "-0.5");
            },
            fails(&["--momentum"]),
        ),
        d(
            "--momentum nan",
            |_, c| {
                c.set("--momentum", "nan");
            },
            fails(&["--momentum"]),
        ),
        d(
            "--weight-decay -1",
            |_, c| {
                c.set("--weight-decay", "-1");
            },
            fails(&["--weight-decay"]),
        ),
        d(
            "--weight-decay nan",
            |_, c| {
                c.set("--weight-decay", "nan");
            },
            fails(&["--weight-decay"]),
        ),
        d(
            "--weight-decay inf",
            |_, c| {
                c.set("--weight-decay", "inf");
            },
            fails(&["--weight-decay"]),
        ),
    ]);
    cases
}

// ---------------------------------------------------------------------------------------
// Class 5: messages that say what is wrong.

fn class5_entries() -> Vec<Entry> {
    let mut entries = plot_entries();
    entries.extend(class5_files());
    entries
}

/// `topk --plot DIR`: the `images` tensor it reads (missing, malformed) and the folder it
/// writes (a file, another's folder, around another output, a shard). `--plot` needs a
/// font for its captions: CI installs one (.ci/run), as the demo's plots need.
fn plot_entries() -> Vec<Entry> {
    vec![
        arg(
            "--plot without an images tensor",
            TOPK,
            |s, c| {
                c.set("--plot", s.out.join("plots"));
            },
            fails(&[
                "checkpoint-10.train.safetensors",
                "no tensor `images`",
                "--plot",
            ]),
        ),
        arg(
            "--plot with flattened images [N, 16]",
            TOPK,
            |s, c| {
                plot_images(s, c, |st| {
                    let data = st.get("images").data.clone();
                    st.put("images", "U8", &[40, 16], data);
                })
            },
            fails(&["checkpoint-10.train.safetensors", "`images`", "[N, H, W]"]),
        ),
        arg(
            "--plot with 2-channel images",
            TOPK,
            |s, c| {
                plot_images(s, c, |st| {
                    let data = st.get("images").data.clone();
                    st.put("images", "U8", &[40, 4, 2, 2], data);
                })
            },
            fails(&["checkpoint-10.train.safetensors", "`images`", "C = 1 or 3"]),
        ),
        arg(
            "--plot with I64 images",
            TOPK,
            |s, c| plot_images(s, c, |st| st.put_i64("images", &[40, 2, 2], &[1; 160])),
            fails(&["checkpoint-10.train.safetensors", "`images`", "found I64"]),
        ),
        arg(
            "--plot with float images above 1",
            TOPK,
            |s, c| {
                plot_images(s, c, |st| {
                    let mut v = vec![0.5f32; 40 * 16];
                    v[3 * 16 + 5] = 2.0;
                    st.put_f32("images", &[40, 4, 4], &v);
                })
            },
            fails(&["`images`", "in [0, 1]", "found 2 at [3, 1, 1]"]),
        ),
        arg(
            "--plot with a NaN in float images",
            TOPK,
            |s, c| {
                plot_images(s, c, |st| {
                    let mut v = vec![0.5f32; 40 * 16 * 3];
                    v[7] = f32::NAN;
                    st.put_f32("images", &[40, 4, 4, 3], &v);
                })
            },
            fails(&["`images`", "found NaN at [0, 0, 2, 1]"]),
        ),
        arg(
            "--plot with one image fewer than the examples",
            TOPK,
            |s, c| {
                plot_images(s, c, |st| {
                    let data = st.get("images").data[16..].to_vec();
                    st.put("images", "U8", &[39, 4, 4], data);
                })
            },
            fails(&["checkpoint-10.train.safetensors", "expected 40 images"]),
        ),
        arg(
            "--plot with test images of another size",
            TOPK,
            |s, c| {
                plot_images(s, c, |st| {
                    st.put("images", "U8", &[40, 2, 8], vec![9; 640]);
                })
            },
            fails(&["checkpoint-10.test.safetensors", "training images' size"]),
        ),
        arg(
            "--plot DIR is a file",
            TOPK,
            |s, c| {
                plot_images(s, c, |_| {});
                std::fs::write(s.out.join("plots"), harness::OLD).unwrap();
            },
            fails(&["plots", "refusing to replace a file"]),
        ),
        arg(
            "--plot DIR holds a file of another kind",
            TOPK,
            |s, c| {
                plot_images(s, c, |_| {});
                std::fs::create_dir(s.out.join("plots")).unwrap();
                std::fs::write(s.out.join("plots/notes.txt"), harness::OLD).unwrap();
            },
            fails(&["plots", "notes.txt", "test-*.png"]),
        ),
        arg(
            "--plot DIR is the run folder",
            TOPK,
            |s, c| {
                plot_images(s, c, |_| {});
                c.set("--plot", &s.run);
            },
            fails(&["run", "an input of this run"]),
        ),
        arg(
            "--plot DIR holds --out",
            TOPK,
            |s, c| {
                plot_images(s, c, |_| {});
                c.set("--out", s.out.join("plots/topk.safetensors"));
            },
            fails(&["plots", "another output"]),
        ),
        arg(
            "--plot on a shard",
            TOPK,
            |s, c| {
                plot_images(s, c, |_| {});
                c.unset("--json").set("--shard", "1/2");
            },
            fails(&["--plot", "shard"]),
        ),
        arg(
            "--plot-top 0",
            TOPK,
            |s, c| {
                plot_images(s, c, |_| {});
                c.set("--plot-top", "0");
            },
            fails(&["--plot-top", "0"]),
        ),
    ]
}

fn class5_files() -> Vec<Entry> {
    vec![
        // Malformed safetensors.
        input(
            "a truncated checkpoint",
            |s, _| cut(s, &ck("10"), 10),
            fails(&["checkpoint-10.safetensors", "truncated"]),
        ),
        input(
            "a truncated training feature file",
            |s, _| cut(s, &tr("10"), 10),
            fails(&["checkpoint-10.train.safetensors", "truncated"]),
        ),
        input(
            "a file truncated inside its header",
            |s, _| {
                let p = s.f(&ck("1"));
                let b = std::fs::read(&p).unwrap();
                std::fs::write(&p, &b[..100]).unwrap();
            },
            fails(&["checkpoint-1.safetensors", "truncated"]),
        ),
        input(
            "trailing junk after the data",
            |s, _| {
                let p = s.f(&tr("2"));
                let mut b = std::fs::read(&p).unwrap();
                b.extend_from_slice(b"JUNKJUNKJUNKJUNK");
                std::fs::write(&p, b).unwrap();
            },
            fails(&["checkpoint-2.train.safetensors", "trailing"]),
        ),
        input(
            "header shape inconsistent with the offsets",
            |s, _| {
                edit_header(&s.f(&tr("1")), |h| {
                    h["features"]["shape"] = serde_json::json!([40, 9]);
                })
            },
            fails(&["checkpoint-1.train.safetensors", "features"]),
        ),
        input(
            "header offsets beyond the data",
            |s, _| {
                edit_header(&s.f(&ck("2")), |h| {
                    let end = h["fc3.weight"]["data_offsets"][1].as_u64().unwrap();
                    h["fc3.weight"]["data_offsets"][1] = serde_json::json!(end + 4096);
                })
            },
            fails(&["checkpoint-2.safetensors", "fc3.weight"]),
        ),
        input(
            "a garbage file",
            |s, _| {
                std::fs::write(s.f(&ck("2")), b"hello, not a tensor file at all").unwrap();
            },
            fails(&["checkpoint-2.safetensors", "not a valid safetensors"]),
        ),
        input(
            "an empty file",
            |s, _| {
                std::fs::write(s.f(&tr("1")), b"").unwrap();
            },
            fails(&["checkpoint-1.train.safetensors", "not a valid safetensors"]),
        ),
        input(
            "a header length of u64::MAX",
            |s, _| {
                let p = s.f(&ck("1"));
                let mut b = std::fs::read(&p).unwrap();
                b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
                std::fs::write(&p, b).unwrap();
            },
            fails(&["checkpoint-1.safetensors", "not a valid safetensors"]),
        ),
        input(
            "a header length beyond the file",
            |s, _| {
                let p = s.f(&ck("1"));
                let mut b = std::fs::read(&p).unwrap();
                b[..8].copy_from_slice(&1_000_000u64.to_le_bytes());
                std::fs::write(&p, b).unwrap();
            },
            fails(&["checkpoint-1.safetensors", "not a valid safetensors"]),
        ),
        input(
            "a header that is not JSON",
            |s, _| {
                std::fs::write(s.f(&ck("1")), files::assemble(b"{this is not json", &[])).unwrap();
            },
            fails(&["checkpoint-1.safetensors", "not a valid safetensors"]),
        ),
        input(
            "a header that is a JSON array",
            |s, _| {
                std::fs::write(s.f(&ck("1")), files::assemble(b"[1, 2, 3]", &[])).unwrap();
            },
            fails(&["checkpoint-1.safetensors", "not a valid safetensors"]),
        ),
        // Names, folders, manifests.
        input(
            "non-UTF-8 file names (a checkpoint with its features)",
            |s, _| {
                for (from, to) in [
                    (ck("1"), &b"ckpt-\xff-1.safetensors"[..]),
                    (tr("1"), &b"ckpt-\xff-1.train.safetensors"[..]),
                    (te("1"), &b"ckpt-\xff-1.test.safetensors"[..]),
                ] {
                    std::fs::rename(s.f(&from), s.run.join(OsStr::from_bytes(to))).unwrap();
                }
            },
            Expect::Succeeds,
        ),
        input("a valid manifest", valid_manifest, Expect::Succeeds),
        input(
            "a manifest with a UTF-8 BOM",
            |s, c| use_manifest(s, c, &format!("\u{feff}{}", s.manifest_text())),
            Expect::Succeeds,
        ),
        input(
            "a manifest with absolute paths, elsewhere",
            |s, c| {
                let text = s
                    .manifest_text()
                    .replace("\"run/", &format!("\"{}/", s.run.display()));
                let m = s.write("elsewhere/deep/m.json", text);
                c.manifest(&m);
            },
            Expect::Succeeds,
        ),
        input(
            "a manifest without `checkpoints`",
            |s, c| use_manifest(s, c, r#"{"entries": []}"#),
            fails(&["run.json", "checkpoints"]),
        ),
        input(
            "a manifest entry without `train`",
            |s, c| {
                manifest_with(
                    s,
                    c,
                    r#"{"checkpoints": [{"checkpoint": "{run}/checkpoint-1.safetensors"}]}"#,
                )
            },
            fails(&["run.json", "train"]),
        ),
        input(
            "a manifest with an unknown field",
            |s, c| {
                manifest_with(
                    s,
                    c,
                    r#"{"checkpoints": [
                {"checkpoint": "{run}/checkpoint-1.safetensors", "train": "{run}/checkpoint-1.train.safetensors",
                 "test": "{run}/checkpoint-1.test.safetensors", "lr": 0.1}]}"#,
                )
            },
            fails(&["run.json", "lr"]),
        ),
        input(
            "a manifest naming a missing file",
            |s, c| {
                manifest_with(
                    s,
                    c,
                    r#"{"checkpoints": [
                {"checkpoint": "{run}/gone.safetensors", "train": "{run}/checkpoint-1.train.safetensors",
                 "test": "{run}/checkpoint-1.test.safetensors"}]}"#,
                )
            },
            fails(&["gone.safetensors", "No such file"]),
        ),
        input(
            "a manifest listing no checkpoint",
            |s, c| use_manifest(s, c, r#"{"checkpoints": []}"#),
            fails(&["run.json", "no checkpoints"]),
        ),
        input(
            "a manifest with test features for only some checkpoints",
            |s, c| {
                manifest_with(
                    s,
                    c,
                    r#"{"checkpoints": [
                {"checkpoint": "{run}/checkpoint-1.safetensors", "train": "{run}/checkpoint-1.train.safetensors",
                 "test": "{run}/checkpoint-1.test.safetensors"},
                {"checkpoint": "{run}/checkpoint-2.safetensors", "train": "{run}/checkpoint-2.train.safetensors"}]}"#,
                )
            },
            fails(&["run.json", "test"]),
        ),
        input(
            "a manifest that is not JSON",
            |s, c| use_manifest(s, c, "checkpoints: [a, b]"),
            fails(&["run.json", "manifest"]),
        ),
        input(
            "an empty manifest",
            |s, c| use_manifest(s, c, ""),
            fails(&["run.json", "manifest"]),
        ),
        input(
            "a manifest that is a JSON array",
            |s, c| use_manifest(s, c, "[]"),
            fails(&["run.json", "manifest"]),
        ),
        input(
            "a manifest that is not UTF-8",
            |s, c| {
                let m = s.write("run.json", b"{\"checkpoints\": [\xff\xfe]}");
                c.manifest(&m);
            },
            fails(&["run.json"]),
        ),
        input(
            "a manifest that is a directory",
            |s, c| {
                let m = s.root.join("run.json");
                std::fs::create_dir(&m).unwrap();
                c.manifest(&m);
            },
            fails(&["run.json", "is a directory"]),
        ),
        input(
            "a manifest that is a FIFO",
            |s, c| {
                let m = s.root.join("run.json");
                s.fifo(&m);
                c.manifest(&m);
            },
            fails(&["run.json", "special file"]),
        ),
        input(
            "a missing manifest",
            |s, c| {
                c.manifest(&s.root.join("run.json"));
            },
            fails(&["run.json", "No such file"]),
        ),
        input(
            "a missing run folder",
            |s, c| {
                c.set("--run", s.root.join("nowhere"));
            },
            fails(&["nowhere"]),
        ),
        input(
            "a run folder that is a file",
            |s, c| {
                let p = s.write("not-a-run", "x");
                c.set("--run", p);
            },
            fails(&["not-a-run", "directory"]),
        ),
        input(
            "an empty run folder",
            |s, c| {
                std::fs::create_dir(s.root.join("empty")).unwrap();
                c.set("--run", s.root.join("empty"));
            },
            fails(&["empty", "no checkpoints"]),
        ),
        input(
            "a run folder of unrelated files",
            |s, _| {
                for e in std::fs::read_dir(&s.run).unwrap() {
                    let p = e.unwrap().path();
                    std::fs::rename(&p, p.with_extension("pt")).unwrap();
                }
            },
            fails(&["no checkpoints"]),
        ),
        input(
            "a feature file without its checkpoint",
            |s, _| {
                std::fs::copy(s.f(&tr("1")), s.f(&tr("3"))).unwrap();
            },
            fails(&["checkpoint-3", "has no checkpoint"]),
        ),
        input(
            "a checkpoint without its training features",
            |s, _| std::fs::remove_file(s.f(&tr("2"))).unwrap(),
            fails(&["checkpoint-2.safetensors", "checkpoint-2.train.safetensors"]),
        ),
        input(
            "test features for only some checkpoints",
            |s, _| std::fs::remove_file(s.f(&te("10"))).unwrap(),
            fails(&["checkpoint-10", "test features"]),
        ),
        input(
            "no test features at all",
            |s, _| {
                for c in CKPTS {
                    std::fs::remove_file(s.f(&te(c))).unwrap();
                }
            },
            fails(&["no test examples"]),
        )
        .test_only(),
        input(
            "a layer that is absent (lists what exists)",
            |_, c| {
                c.set("--layer", "head");
            },
            fails(&["head.weight", "fc3.weight", "fc1.bias"]),
        ),
        input(
            "an empty layer name",
            |_, c| {
                c.set("--layer", "");
            },
            fails(&["`.weight`", "fc3.weight"]),
        ),
        input(
            "a layer that is not the last one (fc2)",
            |_, c| {
                c.set("--layer", "fc2");
            },
            fails(&["features", "[N, 10]"]),
        ),
        input(
            "a checkpoint of another model (no fc3)",
            |s, _| {
                edit(&s.f(&ck("2")), |st| {
                    st.remove("fc3.weight");
                    st.remove("fc3.bias");
                })
            },
            fails(&["checkpoint-2.safetensors", "fc3.weight", "fc1.weight"]),
        ),
        // Labels, dtypes, shapes.
        input(
            "a training label out of range",
            |s, _| every(s, "train", |st| ints(st, "labels", |v| v[0] = 4)),
            fails(&[
                "checkpoint-1.train.safetensors",
                "labels",
                "[0, 4)",
                "found 4 at [0]",
            ]),
        ),
        input(
            "a test label out of range",
            |s, _| every(s, "test", |st| ints(st, "labels", |v| v[3] = 4)),
            fails(&[
                "checkpoint-1.test.safetensors",
                "labels",
                "[0, 4)",
                "found 4 at [3]",
            ]),
        )
        .test_only(),
        input(
            "a negative label",
            |s, _| every(s, "train", |st| ints(st, "labels", |v| v[0] = -1)),
            fails(&[
                "checkpoint-1.train.safetensors",
                "labels",
                "found -1 at [0]",
            ]),
        ),
        input(
            "a u8 label of 255",
            |s, _| {
                every(s, "train", |st| {
                    let mut v: Vec<u8> = st.i64s("labels").iter().map(|&x| x as u8).collect();
                    v[9] = 255;
                    st.put("labels", "U8", &[40], v);
                })
            },
            fails(&[
                "checkpoint-1.train.safetensors",
                "labels",
                "found 255 at [9]",
            ]),
        ),
        input(
            "boolean labels",
            |s, _| {
                edit(&s.f(&tr("1")), |st| {
                    st.put("labels", "BOOL", &[40], vec![1; 40])
                })
            },
            fails(&["checkpoint-1.train.safetensors", "labels", "integer"]),
        ),
        input(
            "2-D labels",
            |s, _| {
                edit(&s.f(&tr("1")), |st| {
                    let v = st.i64s("labels");
                    st.put_i64("labels", &[40, 1], &v);
                })
            },
            fails(&["checkpoint-1.train.safetensors", "labels", "1-D"]),
        ),
        input(
            "labels shorter than the features",
            |s, _| {
                edit(&s.f(&tr("1")), |st| {
                    let v = st.i64s("labels");
                    st.put_i64("labels", &[39], &v[..39]);
                })
            },
            fails(&["checkpoint-1.train.safetensors", "labels", "40"]),
        ),
        input(
            "integer features",
            |s, _| {
                edit(&s.f(&tr("1")), |st| {
                    st.put_i64("features", &[40, 8], &[1; 320])
                })
            },
            fails(&["checkpoint-1.train.safetensors", "features", "float"]),
        ),
        input(
            "an integer layer weight",
            |s, _| {
                edit(&s.f(&ck("1")), |st| {
                    st.put("fc3.weight", "I32", &[4, 8], vec![0; 128]);
                })
            },
            fails(&["checkpoint-1.safetensors", "fc3.weight", "float"]),
        ),
        input(
            "3-D features",
            |s, _| {
                edit(&s.f(&tr("1")), |st| {
                    let v = st.f32s("features");
                    st.put_f32("features", &[40, 2, 4], &v);
                })
            },
            fails(&["checkpoint-1.train.safetensors", "features", "2-D"]),
        ),
        input(
            "1-D features",
            |s, _| {
                edit(&s.f(&tr("1")), |st| {
                    let v = st.f32s("features");
                    st.put_f32("features", &[320], &v);
                })
            },
            fails(&["checkpoint-1.train.safetensors", "features", "2-D"]),
        ),
        input(
            "a 1-D layer weight",
            |s, _| {
                edit(&s.f(&ck("1")), |st| {
                    let v = st.f32s("fc3.weight");
                    st.put_f32("fc3.weight", &[32], &v);
                })
            },
            fails(&["checkpoint-1.safetensors", "fc3.weight", "2-D"]),
        ),
        input(
            "a bias of the wrong length",
            |s, _| edit(&s.f(&ck("1")), |st| st.put_f32("fc3.bias", &[3], &[0.0; 3])),
            fails(&["checkpoint-1.safetensors", "fc3.bias", "[4]"]),
        ),
        input(
            "training features narrower than the layer",
            |s, _| {
                edit(&s.f(&tr("1")), |st| {
                    st.put_f32("features", &[40, 7], &[0.5; 280]);
                })
            },
            fails(&[
                "checkpoint-1.train.safetensors",
                "features",
                "[N, 8]",
                "[40, 7]",
            ]),
        ),
        input(
            "test features narrower than the layer",
            |s, _| {
                edit(&s.f(&te("2")), |st| {
                    st.put_f32("features", &[7, 6], &[0.5; 42]);
                })
            },
            fails(&["checkpoint-2.test.safetensors", "features", "[N, 8]"]),
        )
        .test_only(),
        input(
            "training ids that differ between checkpoints",
            |s, _| edit(&s.f(&tr("2")), |st| ints(st, "ids", |v| v.reverse())),
            fails(&["checkpoint-2.train.safetensors", "ids"]),
        ),
        input(
            "test ids that differ between checkpoints",
            |s, _| edit(&s.f(&te("10")), |st| ints(st, "ids", |v| v[0] += 1000)),
            fails(&["checkpoint-10.test.safetensors", "ids"]),
        )
        .test_only(),
        input(
            "training labels that differ between checkpoints",
            |s, _| {
                edit(&s.f(&tr("2")), |st| {
                    ints(st, "labels", |v| v[0] = (v[0] + 1) % 4)
                })
            },
            fails(&["checkpoint-2.train.safetensors", "labels"]),
        ),
        input(
            "fewer training examples at one checkpoint",
            |s, _| {
                edit(&s.f(&tr("2")), |st| {
                    let f = st.f32s("features");
                    st.put_f32("features", &[39, 8], &f[..39 * 8]);
                    let l = st.i64s("labels");
                    st.put_i64("labels", &[39], &l[..39]);
                    let i = st.i64s("ids");
                    st.put_i64("ids", &[39], &i[..39]);
                    let t = st.f32s("targets");
                    st.put_f32("targets", &[39, 4], &t[..39 * 4]);
                })
            },
            fails(&["checkpoint-2.train.safetensors", "40"]),
        ),
        // Valid variants that must keep working.
        input(
            "bf16 features everywhere",
            |s, _| {
                for kind in ["train", "test"] {
                    every(s, kind, |st| {
                        let shape = st.shape("features");
                        let v = st.f32s("features");
                        st.put_bf16("features", &shape, &v);
                    });
                }
            },
            Expect::Succeeds,
        ),
        input(
            "f64 weights and features everywhere",
            |s, _| {
                for kind in ["", "train", "test"] {
                    every(s, kind, |st| {
                        let name = if st.tensors.iter().any(|t| t.name == "features") {
                            "features"
                        } else {
                            "fc3.weight"
                        };
                        let shape = st.shape(name);
                        let v: Vec<f64> = st.f32s(name).iter().map(|&x| x as f64).collect();
                        st.put_f64(name, &shape, &v);
                    });
                }
            },
            Expect::Succeeds,
        ),
        input(
            "u8 labels and i32 ids",
            |s, _| {
                for kind in ["train", "test"] {
                    every(s, kind, |st| {
                        let n = st.shape("labels")[0];
                        let l: Vec<u8> = st.i64s("labels").iter().map(|&x| x as u8).collect();
                        st.put("labels", "U8", &[n], l);
                        let i: Vec<u8> = st
                            .i64s("ids")
                            .iter()
                            .flat_map(|&x| (x as i32).to_le_bytes())
                            .collect();
                        st.put("ids", "I32", &[n], i);
                    });
                }
            },
            Expect::Succeeds,
        ),
        arg(
            "--backend auto says nothing on stderr with -q",
            SUBS,
            |_, c| {
                c.set("--backend", "auto");
            },
            Expect::SucceedsQuietly,
        ),
        arg(
            "--backend cpu says nothing on stderr with -q",
            SUBS,
            |_, _| {},
            Expect::SucceedsQuietly,
        ),
        // Arguments.
        arg(
            "an unknown --method",
            SUBS,
            |_, c| {
                c.set("--method", "nope");
            },
            fails(&["nope", "tracincp-fast"]),
        ),
        arg(
            "--run empty",
            SUBS,
            |_, c| {
                c.set("--run", "");
            },
            fails(&["--run"]),
        ),
        arg(
            "no --layer",
            SUBS,
            |_, c| {
                c.unset("--layer");
            },
            fails(&["--layer"]),
        ),
        arg(
            "--run and --manifest together",
            SUBS,
            |s, c| {
                let m = s.write("run.json", s.manifest_text());
                c.set("--manifest", m);
            },
            fails(&["--run", "--manifest"]),
        ),
        arg(
            "neither --run nor --manifest",
            SUBS,
            |_, c| {
                c.unset("--run");
            },
            fails(&["--run"]),
        ),
        arg(
            "an unknown flag",
            SUBS,
            |_, c| {
                c.switch("--bogus");
            },
            fails(&["--bogus"]),
        ),
        arg(
            "--backend tpu",
            SUBS,
            |_, c| {
                c.set("--backend", "tpu");
            },
            fails(&["tpu", "--backend"]),
        ),
        arg(
            "--loss hinge",
            SUBS,
            |_, c| {
                c.set("--loss", "hinge");
            },
            fails(&["hinge", "--loss"]),
        ),
        arg(
            "--reduction none",
            SUBS,
            |_, c| {
                c.set("--reduction", "none");
            },
            fails(&["none", "--reduction"]),
        ),
        arg(
            "-k abc",
            TOPK,
            |_, c| {
                c.set("-k", "abc");
            },
            fails(&["abc", "-k"]),
        ),
        arg(
            "--top -1",
            SELF,
            |_, c| {
                c.set("--top", "-1");
            },
            fails(&["--top"]),
        ),
        arg(
            "--learning-rate abc",
            SUBS,
            |_, c| {
                c.set("--learning-rate", "abc");
            },
            fails(&["--learning-rate"]),
        ),
    ]
}

/// Writes `bytes` as MNIST file `name` of the scene's MNIST folder (removing both the raw
/// and the gzipped name first).
fn mnist_file(s: &Scene, stem: &str, name: &str, bytes: &[u8]) {
    let dir = s.root.join("mnist");
    let _ = std::fs::remove_file(dir.join(stem));
    let _ = std::fs::remove_file(dir.join(format!("{stem}.gz")));
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn images(n: usize) -> Vec<u8> {
    (0..n * 784).map(|i| (i % 251) as u8).collect()
}

fn class5() -> Vec<Case> {
    let mut cases = instantiate("class5", class5_entries(), false);
    // `infl demo --mnist-dir`: every case gets the scene's tiny MNIST folder, then breaks it.
    let m = |what: &'static str, apply: fn(&Scene, &mut Call), expect| {
        let mut case = demo("class5", what, apply, expect);
        let build = case.build.clone();
        case.build = std::sync::Arc::new(move |s: &Scene| {
            let dir = s.mnist();
            let mut c = build(s);
            if c.get("--mnist-dir").is_none() {
                c.set("--mnist-dir", dir);
            }
            c
        });
        case
    };
    const TI: &str = "train-images-idx3-ubyte";
    const TL: &str = "train-labels-idx1-ubyte";
    const EI: &str = "t10k-images-idx3-ubyte";
    const EL: &str = "t10k-labels-idx1-ubyte";
    cases.extend([
        m(
            "a tiny MNIST folder (gzip and raw files)",
            |_, _| {},
            Expect::Succeeds,
        ),
        m(
            "gzip files named without .gz",
            |s, _| {
                let d = s.root.join("mnist");
                std::fs::rename(d.join(format!("{TI}.gz")), d.join(TI)).unwrap();
            },
            Expect::Succeeds,
        ),
        m(
            "a missing --mnist-dir",
            |s, c| {
                c.set("--mnist-dir", s.root.join("nowhere"));
            },
            fails(&["nowhere"]),
        ),
        m(
            "--mnist-dir is a file",
            |s, c| {
                let p = s.write("not-a-dir", "x");
                c.set("--mnist-dir", p);
            },
            fails(&["not-a-dir"]),
        ),
        m(
            "the training labels missing",
            |s, _| {
                std::fs::remove_file(s.root.join("mnist").join(format!("{TL}.gz"))).unwrap();
            },
            fails(&[TL]),
        ),
        m(
            "the test images missing",
            |s, _| {
                std::fs::remove_file(s.root.join("mnist").join(EI)).unwrap();
            },
            fails(&[EI]),
        ),
        m(
            "garbage training images",
            |s, _| mnist_file(s, TI, TI, b"not an IDX file at all"),
            fails(&[TI, "magic number"]),
        ),
        m(
            "an empty label file",
            |s, _| mnist_file(s, EL, EL, b""),
            fails(&[EL, "IDX header"]),
        ),
        m(
            "truncated raw test images",
            |s, _| {
                let b = files::idx(&[5, 28, 28], &images(5));
                mnist_file(s, EI, EI, &b[..b.len() - 100]);
            },
            fails(&[EI, "truncated"]),
        ),
        m(
            "a truncated gzip stream",
            |s, _| {
                let b = files::gzip(&files::idx(&[20, 28, 28], &images(20)));
                mnist_file(s, TI, &format!("{TI}.gz"), &b[..b.len() / 2]);
            },
            fails(&[TI, "gzip"]),
        ),
        m(
            "a gzip whose IDX header promises more than its data",
            |s, _| {
                let b = files::gzip(&files::idx(&[20, 28, 28], &images(10)));
                mnist_file(s, TI, &format!("{TI}.gz"), &b);
            },
            fails(&[TI, "truncated"]),
        ),
        m(
            "a gzip holding more than its IDX header promises",
            |s, _| {
                let mut data = images(20);
                data.extend(vec![0u8; 100_000]);
                let b = files::gzip(&files::idx(&[20, 28, 28], &data));
                mnist_file(s, TI, &format!("{TI}.gz"), &b);
            },
            fails(&[TI, "IDX"]),
        ),
        m(
            "an IDX header whose dimensions overflow",
            |s, _| {
                let b = files::idx(&[u32::MAX, u32::MAX, u32::MAX], &[0; 64]);
                mnist_file(s, EI, EI, &b);
            },
            fails(&[EI, "IDX"]),
        ),
        m(
            "fewer labels than images",
            |s, _| {
                let b = files::gzip(&files::idx(&[19], &[1; 19]));
                mnist_file(s, TL, &format!("{TL}.gz"), &b);
            },
            fails(&[TL, "20"]),
        ),
        m(
            "a label of 10",
            |s, _| {
                let mut l: Vec<u8> = (0..20).map(|i| (i % 10) as u8).collect();
                l[4] = 10;
                mnist_file(
                    s,
                    TL,
                    &format!("{TL}.gz"),
                    &files::gzip(&files::idx(&[20], &l)),
                );
            },
            fails(&[TL, "0-9"]),
        ),
        m(
            "images of rank 2",
            |s, _| {
                mnist_file(s, EI, EI, &files::idx(&[5, 784], &images(5)));
            },
            fails(&[EI, "3 dimensions"]),
        ),
        m(
            "float images (IDX type 0x0d)",
            |s, _| {
                let mut b = files::idx(&[5, 28, 28], &images(5));
                b[2] = 0x0d;
                mnist_file(s, EI, EI, &b);
            },
            fails(&[EI, "0x0d"]),
        ),
        m(
            "no test images",
            |s, _| {
                mnist_file(s, EI, EI, &files::idx(&[0, 28, 28], &[]));
                mnist_file(s, EL, EL, &files::idx(&[0], &[]));
            },
            fails(&["test image"]),
        ),
        demo(
            "class5",
            "an unknown flag",
            |_, c| {
                c.switch("--bogus");
            },
            fails(&["--bogus"]),
        ),
        demo(
            "class5",
            "--epochs abc",
            |_, c| {
                c.set("--epochs", "abc");
            },
            fails(&["--epochs"]),
        ),
    ]);
    cases
}

// ---------------------------------------------------------------------------------------
// The tests.

/// The backends of `.gpu()` entries: the GPU too when an adapter is present.
fn with_gpu() -> bool {
    match harness::gpu() {
        Ok(true) => true,
        Ok(false) => {
            println!("note: no GPU adapter: the GPU twins of class 1 are not run");
            false
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn class1_non_finite_and_overflowing_inputs() {
    run_group(
        "class 1 (non-finite and overflowing inputs)",
        class1(with_gpu()),
    );
}

#[test]
fn class2_outputs_that_destroy_things() {
    run_group("class 2 (outputs that destroy things)", class2());
}

#[test]
fn class3_unbounded_resources() {
    run_group("class 3 (unbounded resources)", class3());
}

#[test]
fn class4_degenerate_parameters() {
    run_group("class 4 (degenerate parameters)", class4());
}

#[test]
fn class5_messages() {
    run_group("class 5 (messages)", class5());
}

#[test]
fn class5_factor_files() {
    run_group("class 5 (factor files)", factors::cases(with_gpu()));
}

/// The suite covers at least 150 cases (CPU only; GPU twins come on top), every scoring
/// subcommand, every public method and the demo; names are unique.
#[test]
fn the_suite_has_at_least_150_cases() {
    let all: Vec<Case> = [
        class1(false),
        class2(),
        class3(),
        class4(),
        class5(),
        factors::cases(false),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut counts = std::collections::BTreeMap::<(String, String), usize>::new();
    for c in &all {
        let mut parts = c.name.split(['/', ':']);
        let class = parts.next().unwrap().to_string();
        let sub = parts.next().unwrap().to_string();
        *counts.entry((class, sub)).or_default() += 1;
    }
    for ((class, sub), n) in &counts {
        println!("{class:>7} {sub:<15} {n:>4}");
    }
    println!(
        "total: {} cases; public methods: {:?} (features), {:?} (factors)",
        all.len(),
        methods(),
        factors::factor_methods()
    );
    assert!(all.len() >= 150, "only {} hostile cases", all.len());
    for sub in SUBS.iter().chain(&["demo"]) {
        assert!(counts.keys().any(|(_, s)| s == sub), "no case for {sub}");
    }
    for m in methods().into_iter().chain(factors::factor_methods()) {
        assert!(
            all.iter().any(|c| c.name.contains(&format!("/{m}/"))),
            "no case for --method {m}"
        );
    }
    let mut names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
    names.sort();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len(), "case names are not unique");
}
