//! `--shard i/N` and `infl merge`: for every scoring subcommand, any shard count (one,
//! uneven, one row per shard), parts merged in any order equal the unsharded outputs byte
//! for byte; parts that do not fit together (other runs or settings, overlapping or
//! missing shards, altered parts) are refused with a clear message and nothing is written.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{fails, fixtures, ok, s};

/// The Captum fixture run (40 training, 7 test examples).
fn captum_run() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/captum/run")
}

/// The input flags of a run: features (`--run`) or factor files (`--factors`; TracInCP
/// unless the call's own flags name a method).
fn source(factors: bool) -> Vec<String> {
    if factors {
        let dir = fixtures("mlp/factors");
        ["--factors", s(&dir)].map(String::from).to_vec()
    } else {
        let run = captum_run();
        ["--run", s(&run), "--layer", "fc3"]
            .map(String::from)
            .to_vec()
    }
}

/// Runs `infl SUB <source> EXTRA...`.
fn run_sub(sub: &str, factors: bool, extra: &[&str]) {
    let mut args: Vec<String> = vec![sub.to_string()];
    args.extend(source(factors));
    if factors && !extra.contains(&"--method") {
        args.extend(["--method".into(), "tracincp".into()]);
    }
    args.extend(extra.iter().map(|x| x.to_string()));
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

/// Every file under `dir` with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.insert(p.clone(), std::fs::read(&p).unwrap());
        }
    }
    out
}

/// Writes the parts of `count` shards of `sub` into `dir`; returns their paths.
fn parts(sub: &str, factors: bool, count: usize, dir: &Path, extra: &[&str]) -> Vec<PathBuf> {
    (1..=count)
        .map(|i| {
            let shard = format!("{i}/{count}");
            if sub == "self-influence" {
                let mut args = vec!["--shard", &shard, "--out-dir", s(dir)];
                args.extend(extra);
                run_sub(sub, factors, &args);
                dir.join(format!("self_influence.shard-{i}-of-{count}.safetensors"))
            } else {
                let out = dir.join(format!("{sub}.{i}.safetensors"));
                let mut args = vec!["--shard", &shard, "-o", s(&out)];
                args.extend(extra);
                run_sub(sub, factors, &args);
                out
            }
        })
        .collect()
}

/// Parts of `count` shards, merged in a scrambled order, equal the unsharded outputs (each
/// run with the flags `method`).
fn check_merge_equals_whole(sub: &str, factors: bool, count: usize, method: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let (whole, merged, part_dir) = (
        tmp.path().join("whole"),
        tmp.path().join("merged"),
        tmp.path().join("parts"),
    );
    let k: &[&str] = if sub == "topk" { &["-k", "4"] } else { &[] };
    fn with<'a>(method: &[&'a str], flags: &[&'a str]) -> Vec<&'a str> {
        [method, flags].concat()
    }
    match sub {
        "self-influence" => run_sub(
            sub,
            factors,
            &with(method, &["--out-dir", s(&whole), "--top", "0"]),
        ),
        "topk" => {
            std::fs::create_dir_all(&whole).unwrap();
            let (o, j) = (whole.join("r.safetensors"), whole.join("r.json"));
            run_sub(
                sub,
                factors,
                &with(method, &["-k", "4", "-o", s(&o), "--json", s(&j)]),
            );
        }
        _ => {
            std::fs::create_dir_all(&whole).unwrap();
            run_sub(
                sub,
                factors,
                &with(method, &["-o", s(&whole.join("r.safetensors"))]),
            );
        }
    }
    std::fs::create_dir_all(&part_dir).unwrap();
    let mut paths = parts(sub, factors, count, &part_dir, &with(method, k));
    // Any order: reversed, then the first half moved to the end.
    paths.reverse();
    paths.rotate_left(count / 2);
    let mut args: Vec<String> = vec!["merge".into()];
    match sub {
        "self-influence" => args.extend([s(&merged).to_string(), "--top".into(), "0".into()]),
        "topk" => {
            std::fs::create_dir_all(&merged).unwrap();
            let (o, j) = (merged.join("r.safetensors"), merged.join("r.json"));
            args.extend([s(&o).to_string(), "--json".into(), s(&j).to_string()]);
        }
        _ => {
            std::fs::create_dir_all(&merged).unwrap();
            args.push(s(&merged.join("r.safetensors")).to_string());
        }
    }
    args.extend(paths.iter().map(|p| s(p).to_string()));
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let rel = |m: BTreeMap<PathBuf, Vec<u8>>, root: &Path| -> BTreeMap<PathBuf, Vec<u8>> {
        m.into_iter()
            .map(|(p, b)| (p.strip_prefix(root).unwrap().to_path_buf(), b))
            .collect()
    };
    let (w, m) = (rel(files(&whole), &whole), rel(files(&merged), &merged));
    assert!(!w.is_empty());
    assert_eq!(
        w.keys().collect::<Vec<_>>(),
        m.keys().collect::<Vec<_>>(),
        "{sub} {count}"
    );
    for (path, bytes) in &w {
        assert!(
            *bytes == m[path],
            "{sub} with {count} shards (factors: {factors}): {} differs from the unsharded one",
            path.display()
        );
    }
}

#[test]
fn merged_parts_equal_the_unsharded_outputs_byte_for_byte() {
    // 1 shard, uneven shards (40 rows in 3 and 7), one row per shard (40).
    for sub in ["topk", "scores", "self-influence"] {
        for count in [1, 3, 7, 40] {
            check_merge_equals_whole(sub, false, count, &[]);
        }
    }
}

#[test]
fn influence_shards_with_a_saved_hessian_merge_into_the_unsharded_outputs() {
    // The Hessian fitted once on the whole training set (`infl fit`), given to every shard;
    // the mean Hessian's 1/N is the whole set's.
    let tmp = tempfile::tempdir().unwrap();
    let hessian = tmp.path().join("h.safetensors");
    let run = captum_run();
    ok(&[
        "fit",
        "--method",
        "influence",
        "--run",
        s(&run),
        "--layer",
        "fc3",
        "-o",
        s(&hessian),
    ]);
    for solver in ["exact", "cg"] {
        let method = [
            "--method",
            "influence",
            "--solver",
            solver,
            "--hessian",
            s(&hessian),
        ];
        for sub in ["topk", "scores", "self-influence"] {
            for count in [3, 40] {
                check_merge_equals_whole(sub, false, count, &method);
            }
        }
    }
    // Without a saved fit a shard is refused, saying what to do; nothing is written.
    let out = tmp.path().join("never.safetensors");
    fails(
        &[
            "topk",
            "--method",
            "influence",
            "--run",
            s(&run),
            "--layer",
            "fc3",
            "--shard",
            "1/2",
            "-o",
            s(&out),
        ],
        &[
            "shard: 1/2:",
            "whole training set",
            "`infl fit`",
            "--hessian FILE",
        ],
    );
    assert!(!out.exists());
}

#[test]
fn kfac_shards_with_a_saved_fit_merge_into_the_unsharded_outputs() {
    // K-FAC and EK-FAC fitted once on factor files (`infl fit --factors`), given to every
    // shard and to the unsharded run alike.
    let tmp = tempfile::tempdir().unwrap();
    let factors = fixtures("mlp/factors");
    for (strategy, curvature) in [("kfac", "fisher"), ("ekfac", "true-fisher")] {
        let fit = tmp.path().join(format!("{strategy}.safetensors"));
        let solver = ["--solver", strategy, "--curvature", curvature];
        let mut c = vec![
            "fit",
            "--method",
            "influence",
            "--factors",
            s(&factors),
            "-o",
            s(&fit),
        ];
        c.extend(solver);
        ok(&c);
        let mut method = vec!["--method", "influence", "--hessian", s(&fit)];
        method.extend(solver);
        method.extend(["--damping", "heuristic"]);
        for sub in ["topk", "scores", "self-influence"] {
            for count in [3, 40] {
                check_merge_equals_whole(sub, true, count, &method);
            }
        }
    }
    // Without a saved fit a shard is refused, naming `infl fit` and --hessian FILE.
    let out = tmp.path().join("never.safetensors");
    fails(
        &[
            "topk",
            "--method",
            "influence",
            "--factors",
            s(&factors),
            "--solver",
            "ekfac",
            "--shard",
            "2/3",
            "-o",
            s(&out),
        ],
        &[
            "shard: 2/3:",
            "`infl fit`",
            "--factors/--layers",
            "--hessian FILE",
        ],
    );
    assert!(!out.exists());
}

#[test]
fn merged_factor_parts_equal_the_unsharded_outputs() {
    // TracInCP over every layer of the MLP's factor files (ghost and plain terms).
    let n: usize = {
        let f = infl::io::TensorFile::open(
            fixtures("mlp/factors").join("checkpoint-1.train.safetensors"),
        )
        .unwrap();
        let ids = f.integers("ids").unwrap();
        ids.len()
    };
    for sub in ["topk", "scores", "self-influence"] {
        for count in [2, 5, n] {
            check_merge_equals_whole(sub, true, count, &[]);
        }
    }
}

/// A scratch folder with topk parts of 4 shards and a pre-existing output, for refusals.
struct Scratch {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    parts: Vec<PathBuf>,
}

impl Scratch {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let parts = parts("topk", false, 4, &root, &["-k", "3"]);
        std::fs::write(root.join("out.safetensors"), b"an older result").unwrap();
        Self {
            _tmp: tmp,
            root,
            parts,
        }
    }

    fn out(&self) -> PathBuf {
        self.root.join("out.safetensors")
    }

    /// `infl merge OUT PARTS...` fails with `needles`, and every file is as before.
    fn refused(&self, parts: &[&Path], needles: &[&str]) {
        let before = files(&self.root);
        let out = self.out();
        let mut args = vec!["merge", s(&out)];
        args.extend(parts.iter().map(|p| s(p)));
        fails(&args, needles);
        assert_eq!(before, files(&self.root), "merge {parts:?} changed files");
    }
}

#[test]
fn merge_refuses_parts_that_do_not_fit_together_and_writes_nothing() {
    let sc = Scratch::new();
    let p: Vec<&Path> = sc.parts.iter().map(PathBuf::as_path).collect();
    // Missing and overlapping shards.
    sc.refused(
        &[p[0], p[1], p[3]],
        &["missing 3/4 (rows 20..30)", "every shard"],
    );
    sc.refused(&[p[0], p[1], p[2]], &["missing 4/4"]);
    sc.refused(
        &[p[0], p[1], p[1], p[2], p[3]],
        &["both hold shard 2/4", "overlapping"],
    );

    // Another shard count over the same rows.
    let other = parts("topk", false, 2, &sc.root.join("two"), &["-k", "3"]);
    sc.refused(
        &[p[0], p[1], &other[1]],
        &["not parts of one result", "shard 2/2"],
    );

    // Other settings: k, the estimator's settings, the layer's bias.
    let k5 = sc.root.join("k5.safetensors");
    run_sub("topk", false, &["--shard", "3/4", "-k", "5", "-o", s(&k5)]);
    sc.refused(
        &[p[0], p[1], &k5, p[3]],
        &["not parts of one result", "`k` is \"3\" vs \"5\""],
    );
    let bias = sc.root.join("bias.safetensors");
    let args = [
        "--shard",
        "3/4",
        "-k",
        "3",
        "--include-bias",
        "-o",
        s(&bias),
    ];
    run_sub("topk", false, &args);
    sc.refused(
        &[p[0], p[1], &bias, p[3]],
        &["`include_bias` is \"false\" vs \"true\""],
    );

    // Another run: the same files with other learning rates (a manifest).
    let manifest = sc.root.join("m.json");
    common::manifest(
        &manifest,
        &captum_run(),
        "train",
        r#", "learning_rate": 0.3"#,
    );
    let other_run = sc.root.join("other.safetensors");
    common::ok(&[
        "topk",
        "--manifest",
        s(&manifest),
        "--layer",
        "fc3",
        "-k",
        "3",
        "--shard",
        "3/4",
        "-o",
        s(&other_run),
    ]);
    sc.refused(
        &[p[0], p[1], &other_run, p[3]],
        &["not parts of one result"],
    );

    // Other kinds of results; files that are not parts.
    let scores = sc.root.join("scores.safetensors");
    run_sub("scores", false, &["--shard", "3/4", "-o", s(&scores)]);
    sc.refused(&[p[0], p[1], &scores, p[3]], &["`content` is"]);
    let whole = sc.root.join("whole.safetensors");
    run_sub("topk", false, &["-k", "3", "-o", s(&whole)]);
    sc.refused(
        &[p[0], &whole],
        &["whole.safetensors", "expected a shard part"],
    );
    let ckpt = captum_run().join("checkpoint-1.safetensors");
    sc.refused(
        &[&ckpt],
        &["checkpoint-1.safetensors", "expected a shard part"],
    );
    let not_st = sc.root.join("notes.txt");
    std::fs::write(&not_st, "hello").unwrap();
    sc.refused(&[p[0], &not_st], &["notes.txt"]);
    sc.refused(
        &[p[0], &sc.root.join("absent.safetensors")],
        &["absent.safetensors"],
    );
}

/// Rewrites a part's metadata entry `key` (or a tensor) as a hostile user might.
fn altered(from: &Path, to: &Path, edit: impl FnOnce(&mut BTreeMap<String, String>)) {
    let f = infl::io::TensorFile::open(from).unwrap();
    let mut meta: BTreeMap<String, String> = f
        .metadata()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    edit(&mut meta);
    let mut tensors = Vec::new();
    for name in f.names() {
        let shape = f.info(&name).unwrap().shape.to_vec();
        let t = if name.ends_with("scores") {
            let v = f.matrix(&name, infl::io::Rank::Matrix).unwrap().to_vec();
            infl::io::OutTensor::F32(shape, v)
        } else {
            infl::io::OutTensor::I64(shape, f.integers_flat(&name).unwrap())
        };
        tensors.push((name, t));
    }
    infl::io::write_safetensors(to, tensors, meta.into_iter().collect()).unwrap();
}

#[test]
fn merge_refuses_altered_parts() {
    let sc = Scratch::new();
    let p: Vec<&Path> = sc.parts.iter().map(PathBuf::as_path).collect();
    let bad = sc.root.join("bad.safetensors");
    // Rows that are not the shard's.
    altered(p[2], &bad, |m| {
        m.insert("shard_train_rows".into(), "19..30".into());
    });
    sc.refused(
        &[p[0], p[1], &bad, p[3]],
        &["bad.safetensors", "shard_train_rows", "holds rows 20..30"],
    );
    // A shard index out of its count.
    altered(p[2], &bad, |m| {
        m.insert("shard".into(), "5/4".into());
    });
    sc.refused(
        &[p[0], p[1], &bad, p[3]],
        &["bad.safetensors", "5/4", "1 <= i <= N"],
    );
    // Another run (its identity).
    altered(p[2], &bad, |m| {
        m.insert("shard_run_crc32".into(), "00000000".into());
    });
    sc.refused(
        &[p[0], p[1], &bad, p[3]],
        &["a different run", "shard_run_crc32"],
    );
    // Candidates outside the shard's rows.
    let f = infl::io::TensorFile::open(p[2]).unwrap();
    let meta = f.metadata().clone();
    let mut tensors = Vec::new();
    for name in f.names() {
        let shape = f.info(&name).unwrap().shape.to_vec();
        let t = if name.ends_with("scores") {
            infl::io::OutTensor::F32(
                shape,
                f.matrix(&name, infl::io::Rank::Matrix).unwrap().to_vec(),
            )
        } else {
            let mut v = f.integers_flat(&name).unwrap();
            if name == "proponents" {
                v[0] = 3;
            }
            infl::io::OutTensor::I64(shape, v)
        };
        tensors.push((name, t));
    }
    infl::io::write_safetensors(&bad, tensors, meta).unwrap();
    sc.refused(
        &[p[0], p[1], &bad, p[3]],
        &[
            "bad.safetensors",
            "proponents",
            "expected training rows in 20..30",
        ],
    );
    // The merge output may not replace a part.
    let before = files(&sc.root);
    fails(
        &["merge", s(p[0]), s(p[0]), s(p[1]), s(p[2]), s(p[3])],
        &["input"],
    );
    assert_eq!(before, files(&sc.root));
}
