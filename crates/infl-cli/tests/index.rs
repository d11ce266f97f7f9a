//! `infl index build` and `infl index query` end to end: the index answers what `topk`
//! answers (exactly with `--exact`, and approximately with every candidate rescored), for
//! features and for factor files, and a projected index rescored exactly answers what
//! unprojected `topk` answers; queries in another space, damaged index files and
//! outputs that would destroy the index are refused with a message naming what is wrong,
//! exit code ≠ 0 and nothing written.

mod common;

use std::path::{Path, PathBuf};

use common::{fails, fixtures, infl, manifest, ok, s};
use infl::io::TensorFile;

/// Proponent and opponent ids and scores of a top-k file.
fn lists(path: &Path) -> (Vec<i64>, Vec<f32>) {
    let f = TensorFile::open(path).unwrap();
    let mut ids = f.integers_flat("proponent_ids").unwrap();
    ids.extend(f.integers_flat("opponent_ids").unwrap());
    let mut scores = f
        .matrix("proponent_scores", infl::io::Rank::Matrix)
        .unwrap()
        .data()
        .to_vec();
    scores.extend_from_slice(
        f.matrix("opponent_scores", infl::io::Rank::Matrix)
            .unwrap()
            .data(),
    );
    (ids, scores)
}

fn assert_same_lists(a: &Path, b: &Path) {
    let ((ia, sa), (ib, sb)) = (lists(a), lists(b));
    assert_eq!(ia, ib, "{} vs {}", a.display(), b.display());
    let scale = sb.iter().fold(0f32, |m, x| m.max(x.abs()));
    for (x, y) in sa.iter().zip(&sb) {
        assert!((x - y).abs() <= 1e-5 * scale, "{x} vs {y}");
    }
}

#[test]
fn the_index_answers_what_topk_answers() {
    let dir = tempfile::tempdir().unwrap();
    let run = fixtures("mlp");
    let idx = dir.path().join("idx");
    let method = [
        "--method",
        "tracincp-fast-rand-proj",
        "--projection-dim",
        "16",
        "--seed",
        "5",
    ];
    let mut build = vec!["index", "build", "--run", s(&run), "--layer", "fc3"];
    build.extend(method);
    build.extend(["--index", s(&idx)]);
    ok(&build);
    let topk = dir.path().join("topk.safetensors");
    let mut reference = vec!["topk", "--run", s(&run), "--layer", "fc3", "-k", "5"];
    reference.extend(method);
    reference.extend(["-o", s(&topk)]);
    ok(&reference);
    // The unprojected reference: a shortlist of every row (the fixture has 40) rescored
    // with it is its exact top-k.
    let fast = dir.path().join("fast.safetensors");
    ok(&[
        "topk",
        "--run",
        s(&run),
        "--layer",
        "fc3",
        "-k",
        "5",
        "-o",
        s(&fast),
    ]);
    let embeddings = ["--rescore", "embeddings"];
    for (name, extra, want) in [
        (
            "exact",
            &["--exact", embeddings[0], embeddings[1]][..],
            &topk,
        ),
        (
            "approx",
            &["--candidates", "40", embeddings[0], embeddings[1]][..],
            &topk,
        ),
        ("rescored (default)", &[][..], &fast),
        (
            "rescored exact",
            &["--exact", "--rescore", "exact"][..],
            &fast,
        ),
        ("rescored approx", &["--candidates", "40"][..], &fast),
    ] {
        let out = dir.path().join(format!("{name}.safetensors"));
        let mut q = vec![
            "index",
            "query",
            "--index",
            s(&idx),
            "--run",
            s(&run),
            "-k",
            "5",
        ];
        q.extend(extra);
        q.extend(["-o", s(&out)]);
        ok(&q);
        assert_same_lists(&out, want);
    }
    // Rescoring reads the training rows of the query run: another training set is
    // refused, naming the run and what to do.
    let swapped = dir.path().join("swapped.json");
    manifest(&swapped, &run, "test", "");
    let out = dir.path().join("swapped.safetensors");
    let q = [
        "index",
        "query",
        "--index",
        s(&idx),
        "--manifest",
        s(&swapped),
        "-o",
        s(&out),
    ];
    fails(&q, &[s(&swapped), "not the 40", "--rescore embeddings"]);
    assert!(!out.exists(), "nothing is written");
    let mut embedded = q.to_vec();
    embedded.extend(embeddings);
    ok(&embedded);
    // A shortlist shorter than k is refused.
    fails(
        &[
            "index",
            "query",
            "--index",
            s(&idx),
            "--run",
            s(&run),
            "-k",
            "5",
            "--shortlist",
            "4",
            "-o",
            s(&out),
        ],
        &["shortlist 4 < k = 5"],
    );
}

#[test]
fn an_index_of_factor_files_answers_what_topk_answers() {
    let dir = tempfile::tempdir().unwrap();
    let factors = fixtures("cnn/factors");
    let idx = dir.path().join("idx");
    let src = [
        "--method",
        "tracincp",
        "--factors",
        s(&factors),
        "--layers",
        "conv1,fc",
    ];
    let mut build = vec!["index", "build"];
    build.extend(src);
    build.extend(["--index", s(&idx)]);
    ok(&build);
    let topk = dir.path().join("topk.safetensors");
    let mut reference = vec!["topk", "-k", "3", "-o", s(&topk)];
    reference.extend(src);
    ok(&reference);
    let out = dir.path().join("q.safetensors");
    ok(&[
        "index",
        "query",
        "--index",
        s(&idx),
        "--factors",
        s(&factors),
        "-k",
        "3",
        "--exact",
        "-o",
        s(&out),
    ]);
    assert_same_lists(&out, &topk);
}

/// A copy of the MLP run in `dir/run`.
fn copy_run(dir: &Path) -> PathBuf {
    let run = dir.join("run");
    std::fs::create_dir(&run).unwrap();
    for e in std::fs::read_dir(fixtures("mlp")).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), run.join(e.file_name())).unwrap();
        }
    }
    run
}

fn build_index(dir: &Path, run: &Path) -> PathBuf {
    let idx = dir.join("idx");
    ok(&[
        "index",
        "build",
        "--run",
        s(run),
        "--layer",
        "fc3",
        "--index",
        s(&idx),
    ]);
    idx
}

#[test]
fn queries_in_another_space_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = copy_run(dir.path());
    let idx = build_index(dir.path(), &run);
    let out = dir.path().join("q.safetensors");
    let query = |run: &Path| {
        vec![
            "index".to_string(),
            "query".into(),
            "--index".into(),
            s(&idx).into(),
            "--run".into(),
            s(run).into(),
            "-o".into(),
            s(&out).into(),
        ]
    };
    // One checkpoint fewer.
    let fewer = dir.path().join("fewer");
    std::fs::create_dir(&fewer).unwrap();
    for e in std::fs::read_dir(&run).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("checkpoint-10") {
            std::fs::copy(e.path(), fewer.join(&name)).unwrap();
        }
    }
    let args = query(&fewer);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    fails(&args, &["the index was built with", "checkpoints"]);
    // Other learning rates (a manifest overriding them).
    let other_rates = dir.path().join("run.json");
    manifest(&other_rates, &run, "train", r#", "learning_rate": 0.7"#);
    fails(
        &[
            "index",
            "query",
            "--index",
            s(&idx),
            "--manifest",
            s(&other_rates),
            "-o",
            s(&out),
        ],
        &["the index was built with", "learning rates"],
    );
    // A factor folder for an index of features.
    fails(
        &[
            "index",
            "query",
            "--index",
            s(&idx),
            "--factors",
            s(&fixtures("mlp/factors")),
            "-o",
            s(&out),
        ],
        &["--run"],
    );
    assert!(!out.exists(), "nothing is written");
}

#[test]
fn damaged_index_files_are_refused_and_the_index_is_never_an_output() {
    let dir = tempfile::tempdir().unwrap();
    let run = copy_run(dir.path());
    let idx = build_index(dir.path(), &run);
    let out = dir.path().join("q.safetensors");
    let query = |o: &Path| {
        infl(&[
            "index",
            "query",
            "--index",
            s(&idx),
            "--run",
            s(&run),
            "-o",
            s(o),
        ])
    };
    // Outputs onto the index's own files are refused; the files stay as they were.
    for name in ["embeddings.safetensors", "ann.usearch"] {
        let before = std::fs::read(idx.join(name)).unwrap();
        let o = query(&idx.join(name));
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains(name));
        assert_eq!(std::fs::read(idx.join(name)).unwrap(), before);
    }
    // The index in the run folder itself (where its tensors would be taken for
    // checkpoints) is refused.
    fails(
        &[
            "index",
            "build",
            "--run",
            s(&run),
            "--layer",
            "fc3",
            "--index",
            s(&run),
        ],
        &["run folder"],
    );
    assert!(!run.join("embeddings.safetensors").exists());
    // Truncated or altered files: an error naming the file.
    for name in ["embeddings.safetensors", "ann.usearch"] {
        let path = idx.join(name);
        let good = std::fs::read(&path).unwrap();
        let mut flipped = good.clone();
        let at = flipped.len() - 9;
        flipped[at] ^= 0x40;
        for bad in [good[..good.len() / 2].to_vec(), flipped] {
            std::fs::write(&path, &bad).unwrap();
            let o = query(&out);
            assert!(!o.status.success(), "{name} damaged: query succeeded");
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains(name), "{name}: {err}");
            assert!(!out.exists());
        }
        std::fs::write(&path, &good).unwrap();
    }
    let o = query(&out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
