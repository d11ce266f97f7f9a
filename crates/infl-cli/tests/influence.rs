//! `--method influence` end to end: the exact and CG solvers give the same scores, top-k is
//! the top of the score matrix, self-influence is its diagonal, the settings are recorded,
//! and flags that do not apply are refused with a message, exit code ≠ 0, nothing written.

mod common;

use std::path::{Path, PathBuf};

use common::{fails, fixtures, infl, ok, s};
use infl::io::{Rank, TensorFile};

fn run() -> PathBuf {
    fixtures("mlp")
}

fn scores(path: &Path) -> (Vec<f32>, usize) {
    let m = TensorFile::open(path)
        .unwrap()
        .matrix("scores", Rank::Matrix)
        .unwrap();
    (m.data().to_vec(), m.cols())
}

#[test]
fn solvers_agree_and_topk_and_self_influence_are_the_score_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let r = run();
    let base = [
        "--run",
        s(&r),
        "--layer",
        "fc3",
        "--method",
        "influence",
        "--include-bias",
    ];
    let exact = dir.path().join("exact.safetensors");
    let cg = dir.path().join("cg.safetensors");
    let mut a = vec!["scores"];
    a.extend(base);
    a.extend(["--damping", "1e-3", "-o", s(&exact)]);
    ok(&a);
    let mut b = vec!["scores"];
    b.extend(base);
    b.extend([
        "--damping",
        "1e-3",
        "--solver",
        "cg",
        "--cg-tolerance",
        "1e-9",
        "-o",
        s(&cg),
    ]);
    ok(&b);
    let ((x, n), (y, _)) = (scores(&exact), scores(&cg));
    let scale = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (p, q) in x.iter().zip(&y) {
        assert!((p - q).abs() <= 1e-4 * scale, "exact {p} vs CG {q}");
    }
    // LiSSA and a full-rank Arnoldi (36 parameters) agree with the exact solver too.
    for (name, extra) in [
        (
            "lissa",
            &["--solver", "lissa", "--lissa-depth", "20000"][..],
        ),
        (
            "arnoldi",
            &[
                "--solver",
                "arnoldi",
                "--arnoldi-eigenpairs",
                "36",
                "--seed",
                "2",
            ][..],
        ),
    ] {
        let path = dir.path().join(format!("{name}.safetensors"));
        let mut c = vec!["scores"];
        c.extend(base);
        c.extend(["--damping", "1e-3", "-o", s(&path)]);
        c.extend(extra);
        ok(&c);
        let (z, _) = scores(&path);
        for (p, q) in x.iter().zip(&z) {
            assert!((p - q).abs() <= 1e-3 * scale, "exact {p} vs {name} {q}");
        }
        let meta = TensorFile::open(&path).unwrap().metadata().clone();
        assert_eq!(meta.get("solver").map(String::as_str), Some(name));
    }
    // Captum's convention: the summed Hessian, N = 40 times smaller at 40 times the damping.
    let captum = dir.path().join("captum.safetensors");
    let mut c = vec!["scores"];
    c.extend(base);
    c.extend([
        "--convention",
        "captum",
        "--damping",
        "4e-2",
        "-o",
        s(&captum),
    ]);
    ok(&c);
    let (w, _) = scores(&captum);
    for (p, q) in x.iter().zip(&w) {
        assert!(
            (p - 40.0 * q).abs() <= 1e-4 * scale,
            "kronfluence {p} vs 40 x captum {q}"
        );
    }
    let heuristic = dir.path().join("heuristic.safetensors");
    let mut c = vec!["scores"];
    c.extend(base);
    c.extend(["--damping", "heuristic", "-o", s(&heuristic)]);
    ok(&c);
    let meta = TensorFile::open(&heuristic).unwrap().metadata().clone();
    assert_eq!(meta.get("damping").map(String::as_str), Some("heuristic"));
    assert_eq!(
        meta.get("convention").map(String::as_str),
        Some("kronfluence")
    );
    let meta = TensorFile::open(&cg).unwrap().metadata().clone();
    assert_eq!(meta.get("method").map(String::as_str), Some("influence"));
    assert_eq!(meta.get("solver").map(String::as_str), Some("cg"));
    assert_eq!(meta.get("damping").map(String::as_str), Some("1e-3"));
    // Top-1 proponent of each test example is the row maximum of the scores.
    let top = dir.path().join("top.safetensors");
    let mut t = vec!["topk"];
    t.extend(base);
    t.extend(["--damping", "1e-3", "-k", "1", "-o", s(&top)]);
    ok(&t);
    let f = TensorFile::open(&top).unwrap();
    let best = f.matrix("proponent_scores", Rank::Matrix).unwrap();
    for (q, row) in x.chunks(n).enumerate() {
        let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        assert!(
            (best.view().row(q)[0] - max).abs() <= 1e-6 * scale,
            "query {q}"
        );
    }
    // Self-influence: positive ((H + λI)⁻¹ is positive definite), one per training example.
    let out = dir.path().join("si");
    let mut si = vec!["self-influence"];
    si.extend(base);
    si.extend(["--damping", "1e-3", "--out-dir", s(&out)]);
    ok(&si);
    let v = TensorFile::open(out.join("self_influence.safetensors"))
        .unwrap()
        .matrix("self_influence", Rank::MatrixOrVector)
        .unwrap();
    assert_eq!(v.rows(), n);
    assert!(v.data().iter().all(|&x| x > 0.0));
}

#[test]
fn flags_that_do_not_apply_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.safetensors");
    let r = run();
    let cases: [(&[&str], &str); 9] = [
        (&["--damping", "1"], "are for --method influence"),
        (
            &["--method", "influence", "--cg-tolerance", "1e-3"],
            "not a flag of --solver exact",
        ),
        (
            &[
                "--method",
                "influence",
                "--solver",
                "cg",
                "--lissa-depth",
                "3",
            ],
            "not a flag of --solver cg",
        ),
        (
            &["--method", "influence", "--seed", "3"],
            "draws nothing at random",
        ),
        (
            &[
                "--method",
                "influence",
                "--solver",
                "lissa",
                "--lissa-scale",
                "1e-4",
            ],
            "LiSSA diverged",
        ),
        (
            &[
                "--method",
                "influence",
                "--solver",
                "arnoldi",
                "--arnoldi-dim",
                "0",
            ],
            "'--arnoldi-dim <ARNOLDI_DIM>': expected at least 1, found 0",
        ),
        (
            &["--method", "influence", "--damping", "-1"],
            "expected a finite value >= 0",
        ),
        (
            &[
                "--method",
                "influence",
                "--solver",
                "cg",
                "--cg-max-iterations",
                "1",
            ],
            "did not reach",
        ),
        (&["--method", "influence", "--solver", "newton"], "newton"),
    ];
    for (extra, needle) in cases {
        let mut a = vec!["topk", "--run", s(&r), "--layer", "fc3", "-o", s(&out)];
        a.extend(extra);
        let o = infl(&a);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{extra:?} succeeded");
        assert!(err.contains(needle), "{extra:?}: {err}");
        assert!(!out.exists(), "{extra:?}: nothing is written");
    }
    let idx = dir.path().join("idx");
    let o = infl(&[
        "index",
        "build",
        "--run",
        s(&r),
        "--layer",
        "fc3",
        "--method",
        "influence",
        "--index",
        s(&idx),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("an index embeds training examples alone"));
    assert!(!idx.exists());
}

#[test]
fn a_saved_hessian_gives_the_same_scores_and_refuses_other_runs() {
    let dir = tempfile::tempdir().unwrap();
    let r = run();
    let h = dir.path().join("h.safetensors");
    let base = ["--run", s(&r), "--layer", "fc3", "--include-bias"];
    let mut fit = vec!["fit", "-o", s(&h)];
    fit.extend(base);
    ok(&fit);
    let (fresh, saved) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
    );
    for (out, extra) in [(&fresh, &[][..]), (&saved, &["--hessian", s(&h)][..])] {
        let mut c = vec![
            "scores",
            "--method",
            "influence",
            "--damping",
            "1e-3",
            "-o",
            s(out),
        ];
        c.extend(base);
        c.extend(extra);
        ok(&c);
    }
    assert_eq!(
        scores(&fresh).0,
        scores(&saved).0,
        "the same Hessian, the same scores"
    );
    // With CG the saved matrix is the operator: the same scores to CG's accuracy.
    let cg = dir.path().join("cg.safetensors");
    let mut c = vec![
        "scores",
        "--method",
        "influence",
        "--damping",
        "1e-3",
        "--solver",
        "cg",
    ];
    c.extend(base);
    c.extend(["--hessian", s(&h), "-o", s(&cg)]);
    ok(&c);
    let ((x, _), (y, _)) = (scores(&fresh), scores(&cg));
    let scale = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(x.iter().zip(&y).all(|(p, q)| (p - q).abs() <= 1e-4 * scale));
    // Another run, another bias setting, a damaged file, the file as an output: refused.
    let out = dir.path().join("never.safetensors");
    let other = fixtures("../captum/run");
    let truncated = dir.path().join("truncated.safetensors");
    let bytes = std::fs::read(&h).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let cases: [(Vec<&str>, &str); 4] = [
        (
            vec![
                "--run",
                s(&other),
                "--include-bias",
                "--hessian",
                s(&h),
                "-o",
                s(&out),
            ],
            "crc32",
        ),
        (
            vec!["--run", s(&r), "--hessian", s(&h), "-o", s(&out)],
            "include_bias",
        ),
        (
            vec![
                "--run",
                s(&r),
                "--include-bias",
                "--hessian",
                s(&truncated),
                "-o",
                s(&out),
            ],
            "truncated.safetensors",
        ),
        (
            vec![
                "--run",
                s(&r),
                "--include-bias",
                "--hessian",
                s(&h),
                "-o",
                s(&h),
            ],
            "outputs never replace inputs",
        ),
    ];
    for (extra, needle) in cases {
        let mut c = vec!["scores", "--method", "influence", "--layer", "fc3"];
        c.extend(&extra);
        let o = infl(&c);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{extra:?} succeeded");
        assert!(err.contains(needle), "{extra:?}: {err}");
        assert!(!out.exists());
    }
    assert_eq!(
        std::fs::read(&h).unwrap(),
        bytes,
        "the Hessian file is untouched"
    );
    let o = infl(&[
        "fit",
        "--method",
        "tracincp",
        "--run",
        s(&r),
        "--layer",
        "fc3",
        "-o",
        s(&out),
    ]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("fits the curvature of --method influence")
    );
    assert!(!out.exists());
}

/// K-FAC and EK-FAC from the command line: Kronfluence's numbers (fixtures/kronfluence)
/// for the MLP (three layers) and the CNN (a conv with 9 positions), EK-FAC by default on
/// factor files; self-influence positive; flags of the other path refused.
#[test]
fn kfac_and_ekfac_on_factor_files_give_kronfluences_scores() {
    let dir = tempfile::tempdir().unwrap();
    let kron = fixtures("../kronfluence");
    for (strategy, explicit) in [("kfac", true), ("ekfac", false)] {
        let expected =
            TensorFile::open(kron.join(format!("expected_{strategy}.safetensors"))).unwrap();
        let meta = expected.metadata().clone();
        for case in ["mlp", "cnn"] {
            let factors = kron.join(&meta[&format!("{case}_factors")]);
            let out = dir.path().join(format!("{strategy}-{case}.safetensors"));
            let mut c = vec![
                "scores",
                "--method",
                "influence",
                "--factors",
                s(&factors),
                "--layers",
                &meta[&format!("{case}_layers")],
                "--damping",
                &meta["damping_factor"],
                "-o",
                s(&out),
            ];
            if explicit {
                c.extend(["--solver", strategy]);
            }
            ok(&c);
            let (got, _) = scores(&out);
            let want = expected
                .matrix(&format!("{case}_scores"), Rank::Matrix)
                .unwrap();
            let scale = want.data().iter().fold(0f32, |m, v| m.max(v.abs()));
            for (g, w) in got.iter().zip(want.data()) {
                assert!(
                    (g - w).abs() <= 1e-5 * scale,
                    "{strategy} {case}: {g} vs {w}"
                );
            }
            let solver = TensorFile::open(&out).unwrap().metadata()["solver"].clone();
            assert_eq!(solver, strategy);
        }
    }
    let factors = fixtures("mlp/factors");
    let si = dir.path().join("si");
    ok(&[
        "self-influence",
        "--method",
        "influence",
        "--factors",
        s(&factors),
        "--out-dir",
        s(&si),
    ]);
    let v = TensorFile::open(si.join("self_influence.safetensors"))
        .unwrap()
        .matrix("self_influence", Rank::MatrixOrVector)
        .unwrap();
    assert!(v.data().iter().all(|&x| x > 0.0));
    let out = dir.path().join("never.safetensors");
    for (extra, needle) in [
        (
            &["--solver", "kfac", "--curvature", "hessian"][..],
            "--curvature hessian is for",
        ),
        (
            &["--curvature", "gauss-newton"][..],
            "expected an infl-nn MLP",
        ),
        (&["--convention", "captum"][..], "drop --convention captum"),
        (&["--include-bias"][..], "--include-bias"),
    ] {
        let mut c = vec![
            "topk",
            "--method",
            "influence",
            "--factors",
            s(&factors),
            "-o",
            s(&out),
        ];
        c.extend(extra);
        let o = infl(&c);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(needle),
            "{extra:?}: {err}"
        );
        assert!(!out.exists());
    }
}

/// Factor files without `L.g_sampled` (exported with `--no-sampled`): the true Fisher is
/// refused, naming the tensor and the empirical alternative, with nothing written.
#[test]
fn true_fisher_without_sampled_gradients_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let factors = dir.path().join("factors");
    std::fs::create_dir(&factors).unwrap();
    for entry in std::fs::read_dir(fixtures("mlp/factors")).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let kept: Vec<(String, safetensors::tensor::TensorView<'_>)> = (file.tensors().into_iter())
            .filter(|(name, _)| !name.ends_with(".g_sampled"))
            .collect();
        let meta = header.metadata().clone();
        let out = safetensors::serialize(kept, meta).unwrap();
        std::fs::write(factors.join(path.file_name().unwrap()), out).unwrap();
    }
    let out = dir.path().join("never.safetensors");
    let args = [
        "topk",
        "--method",
        "influence",
        "--factors",
        s(&factors),
        "--curvature",
        "true-fisher",
        "-o",
        s(&out),
    ];
    let o = infl(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "accepted");
    assert!(
        err.contains("tensor `fc1.g_sampled`") && err.contains("--curvature fisher"),
        "{err}"
    );
    assert!(!out.exists());
}

/// A factor file of one layer `fc` with `inputs` inputs and 2 outputs, 2 examples.
fn wide_factor_file(path: &Path, inputs: usize) {
    use safetensors::tensor::{Dtype, TensorView};
    let f32s = |v: Vec<f32>| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let a = f32s((0..2 * inputs).map(|i| (i % 7) as f32 * 0.1).collect());
    let g = f32s(vec![0.5, -0.5, -0.25, 0.25]);
    let labels: Vec<u8> = [0i64, 1].iter().flat_map(|x| x.to_le_bytes()).collect();
    let tensors = [
        (
            "fc.a",
            TensorView::new(Dtype::F32, vec![2, inputs], &a).unwrap(),
        ),
        ("fc.g", TensorView::new(Dtype::F32, vec![2, 2], &g).unwrap()),
        (
            "labels",
            TensorView::new(Dtype::I64, vec![2], &labels).unwrap(),
        ),
    ];
    let meta = std::collections::HashMap::from([
        ("layers".to_string(), "fc".to_string()),
        ("format".to_string(), "infl factors v1".to_string()),
    ]);
    std::fs::write(path, safetensors::serialize(tensors, Some(meta)).unwrap()).unwrap();
}

/// A fit whose plan exceeds the memory available (K-FAC's covariance of 300,000 inputs,
/// 1.3 TiB in f64; a Krylov basis of 600,000 vectors of 600,000 parameters) is announced on
/// stderr (unless -q) and refused before it starts, naming the option that sizes it;
/// nothing is written.
#[test]
fn a_fit_larger_than_memory_is_announced_and_refused_before_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let factors = dir.path().join("factors");
    std::fs::create_dir(&factors).unwrap();
    for split in ["train", "test"] {
        wide_factor_file(&factors.join(format!("c1.{split}.safetensors")), 300_000);
    }
    let out = dir.path().join("topk.safetensors");
    let cases = [
        (true, &["--solver", "ekfac"][..]),
        (false, &["--solver", "ekfac"][..]),
        (
            false,
            &["--solver", "arnoldi", "--arnoldi-dim", "600000"][..],
        ),
    ];
    for (quiet, solver) in cases {
        let mut cmd = assert_cmd::Command::cargo_bin("infl").unwrap();
        if quiet {
            cmd.arg("-q");
        }
        let args = [
            "--backend",
            "cpu",
            "topk",
            "--factors",
            s(&factors),
            "--method",
        ];
        let run = cmd
            .args(args)
            .args(["influence", "-k", "1", "-o", s(&out)])
            .args(solver)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{solver:?}: {err}");
        let flag = if solver[1] == "ekfac" {
            "--layers"
        } else {
            "--arnoldi-dim"
        };
        for needle in ["the influence-function fit needs about", "GiB", flag] {
            assert!(
                err.contains(needle),
                "{solver:?}: stderr lacks {needle:?}: {err}"
            );
        }
        let announced = err.contains("the influence-function fit: about");
        assert_eq!(announced, !quiet, "{err}");
        assert!(!out.exists());
    }
}

/// The tensors of a safetensors file (name → bytes), without its metadata.
fn tensors(path: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    (file.tensors().into_iter())
        .map(|(name, t)| (name, t.data().to_vec()))
        .collect()
}

/// `infl fit --factors` (K-FAC and EK-FAC, empirical and true Fisher): scores, top-k and
/// self-influence with `--hessian FILE` are the unsaved path's bit for bit, at a damping and
/// at the heuristic; a fit of anything else is refused naming the field, and so are a
/// Hessian given to K-FAC, a K-FAC fit given to the final layer or to an operator solver,
/// an altered byte and `infl fit` with an operator solver; nothing is written.
#[test]
fn a_saved_kfac_fit_gives_the_unsaved_scores_and_refuses_other_runs() {
    let dir = tempfile::tempdir().unwrap();
    let factors = fixtures("mlp/factors");
    let base = ["--method", "influence", "--factors", s(&factors)];
    let fit = |out: &Path, extra: &[&str]| {
        let mut c = vec!["fit", "-o", s(out)];
        c.extend(base);
        c.extend(extra);
        ok(&c);
    };
    for (i, flags) in [
        &["--solver", "kfac"][..],
        &["--solver", "ekfac", "--curvature", "true-fisher"][..],
        &["--layers", "fc2,fc3"][..],
    ]
    .into_iter()
    .enumerate()
    {
        let h = dir.path().join(format!("fit-{i}.safetensors"));
        fit(&h, flags);
        for damping in ["1e-3", "heuristic"] {
            for sub in ["scores", "topk", "self-influence"] {
                let outs: Vec<PathBuf> = ["fresh", "saved"]
                    .iter()
                    .map(|w| dir.path().join(format!("{i}-{sub}-{damping}-{w}")))
                    .collect();
                for (out, saved) in outs.iter().zip([false, true]) {
                    let mut c = vec![sub, "--damping", damping];
                    c.extend(base);
                    c.extend(flags);
                    let file = out.join("r.safetensors");
                    match sub {
                        "self-influence" => c.extend(["--out-dir", s(out)]),
                        _ => c.extend(["-o", s(&file)]),
                    }
                    if saved {
                        c.extend(["--hessian", s(&h)]);
                    }
                    ok(&c);
                }
                let file = |d: &Path| match sub {
                    "self-influence" => d.join("self_influence.safetensors"),
                    _ => d.join("r.safetensors"),
                };
                let (a, b) = (tensors(&file(&outs[0])), tensors(&file(&outs[1])));
                assert!(!a.is_empty());
                assert!(
                    a == b,
                    "{flags:?} {sub} at {damping}: the saved fit differs"
                );
            }
        }
    }
    // Refusals, each naming the first field that differs (or the format), nothing written.
    let ekfac = dir.path().join("ekfac.safetensors");
    fit(&ekfac, &[]);
    let hessian = dir.path().join("hessian.safetensors");
    let run = fixtures("mlp");
    ok(&["fit", "--run", s(&run), "--layer", "fc3", "-o", s(&hessian)]);
    let altered = dir.path().join("altered.safetensors");
    let mut bytes = std::fs::read(&ekfac).unwrap();
    let at = bytes.len() - 5;
    bytes[at] ^= 0x01;
    std::fs::write(&altered, &bytes).unwrap();
    // Checkpoint 2 as the last one: the folder without checkpoint 10.
    let earlier = dir.path().join("earlier");
    std::fs::create_dir(&earlier).unwrap();
    for c in ["1", "2"] {
        for split in ["train", "test"] {
            let name = format!("checkpoint-{c}.{split}.safetensors");
            std::fs::copy(factors.join(&name), earlier.join(&name)).unwrap();
        }
    }
    let out = dir.path().join("never.safetensors");
    let cases: Vec<(&Path, Vec<&str>, Vec<&str>)> = vec![
        (
            &factors,
            vec!["--solver", "kfac"],
            vec!["strategy = ekfac", "has kfac"],
        ),
        (
            &factors,
            vec!["--solver", "ekfac", "--curvature", "true-fisher"],
            vec!["curvature = fisher", "has true-fisher"],
        ),
        (
            &factors,
            vec!["--layers", "fc1,fc2"],
            vec![
                "layers = [\"fc1\",\"fc2\",\"fc3\"]",
                "has [\"fc1\",\"fc2\"]",
            ],
        ),
        (
            &earlier,
            vec![],
            vec!["checkpoint = checkpoint-10", "has checkpoint-2"],
        ),
        (
            &factors,
            vec!["--hessian", s(&hessian)],
            vec![
                "hessian.safetensors",
                "\"infl hessian v1\"",
                "infl fit --factors",
            ],
        ),
        (
            &factors,
            vec!["--solver", "cg"],
            vec!["\"infl kfac v1\"", "--solver cg"],
        ),
        (
            &factors,
            vec!["--hessian", s(&altered)],
            vec!["altered.safetensors", "altered or damaged"],
        ),
    ];
    for (folder, extra, needles) in cases {
        let mut c = vec![
            "topk",
            "--method",
            "influence",
            "--factors",
            s(folder),
            "-o",
            s(&out),
        ];
        if !extra.contains(&"--hessian") {
            c.extend(["--hessian", s(&ekfac)]);
        }
        c.extend(&extra);
        fails(&c, &needles);
        assert!(!out.exists());
    }
    // Other training data: a training factor with one value changed (the CRC-32).
    let changed = dir.path().join("changed");
    std::fs::create_dir(&changed).unwrap();
    for e in std::fs::read_dir(&factors).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, changed.join(p.file_name().unwrap())).unwrap();
    }
    let train = changed.join("checkpoint-10.train.safetensors");
    let bytes = std::fs::read(&train).unwrap();
    let (offset, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let start = 8 + offset + header.tensors()["fc2.a"].data_offsets.0;
    let mut bytes = bytes.clone();
    bytes[start] ^= 0x01; // the lowest mantissa bit of fc2.a[0, 0]
    std::fs::write(&train, &bytes).unwrap();
    let c = [
        "topk",
        "--method",
        "influence",
        "--factors",
        s(&changed),
        "--hessian",
        s(&ekfac),
        "-o",
        s(&out),
    ];
    fails(&c, &["crc32 = ", "refit with `infl fit`"]);
    // A K-FAC fit given to the final layer; `infl fit` with an operator solver on factors.
    fails(
        &[
            "topk",
            "--method",
            "influence",
            "--run",
            s(&run),
            "--layer",
            "fc3",
            "--hessian",
            s(&ekfac),
            "-o",
            s(&out),
        ],
        &["ekfac.safetensors", "\"infl kfac v1\"", "infl fit --run"],
    );
    let mut c = vec!["fit", "--solver", "cg", "-o", s(&out)];
    c.extend(base);
    fails(&c, &["kfac|ekfac", "--solver cg"]);
    assert!(!out.exists());
}
