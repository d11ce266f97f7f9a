//! Curvature of factor-file layers: the Fisher operator is `Σ_i ∇_i∇_iᵀ` written out here;
//! the whole-network Hessian of an infl-nn MLP restricted to its last layer is the exact
//! final-layer Hessian (operator and scores, across the features and factor paths); the
//! solvers agree on a whole network; and the errors a user can meet name what to do.
//!
//! No expected numbers are written down: every check compares two computations.

use faer::Mat;
use infl::curvature::{
    Curvature, Damping, FactorFisher, FinalLayer, HessianOperator, NetworkHessian, Solver, layout,
};
use infl::io::{FactorRun, LayerFactors, RunLayout};
use infl::{
    Bias, CpuBackend, Estimator, InfluenceFunction, Matrix, NamedFactors, Run, SplitFactors,
    Splits, run::Loss,
};
use infl_nn::{CheckpointMeta, FactorFiles, Mlp, Product, RunWriter, Split};
use ndarray::Array2;

/// Deterministic values in [-1, 1), some rows larger.
fn values(seed: usize, rows: usize, cols: usize) -> Matrix {
    Matrix::from_fn(rows, cols, |i, j| {
        let h = (i * 7919 + j * 104_729 + seed * 1_299_709) % 10_007;
        (h as f32 / 5003.5 - 1.0) * (1.0 + (i % 3) as f32)
    })
}

/// A split of two layers: one position with a bias, three positions without.
fn split(n: usize) -> SplitFactors {
    let layer = |name: &str, d, k, positions, bias, seed| NamedFactors {
        name: name.into(),
        factors: LayerFactors::Linear {
            a: values(seed, n * positions, d),
            g: values(seed + 1, n * positions, k),
            positions,
            bias,
        },
    };
    SplitFactors {
        source: "split.safetensors".into(),
        ids: (0..n as i64).collect(),
        labels: None,
        layers: vec![
            layer("fc", 4, 3, 1, Bias::Included, 1),
            layer("conv", 3, 2, 3, Bias::Excluded, 5),
        ],
    }
}

/// Example `i`'s gradient, layer blocks `[K, D']` concatenated, written out.
fn gradient(split: &SplitFactors, i: usize) -> Vec<f64> {
    let mut out = Vec::new();
    for layer in &split.layers {
        let LayerFactors::Linear {
            a,
            g,
            positions,
            bias,
        } = &layer.factors
        else {
            unreachable!()
        };
        let (d, k) = (a.cols(), g.cols());
        let w = d + usize::from(*bias == Bias::Included);
        let mut block = vec![0.0; k * w];
        for s in i * positions..(i + 1) * positions {
            for kk in 0..k {
                let gk = f64::from(g.view().row(s)[kk]);
                for j in 0..w {
                    let x = if j < d {
                        f64::from(a.view().row(s)[j])
                    } else {
                        1.0
                    };
                    block[kk * w + j] += gk * x;
                }
            }
        }
        out.extend(block);
    }
    out
}

fn max_abs(m: &Mat<f64>) -> f64 {
    (0..m.nrows())
        .flat_map(|i| (0..m.ncols()).map(move |j| (i, j)))
        .fold(0.0, |acc, (i, j)| acc.max(m[(i, j)].abs()))
}

#[test]
fn the_fisher_operator_is_the_sum_of_gradient_outer_products() {
    let s = split(37);
    let fisher = FactorFisher::empirical(&s).unwrap();
    let got = fisher.assemble(&()).unwrap();
    let p = fisher.dim();
    assert_eq!(p, 3 * 5 + 2 * 3);
    let mut want = Mat::<f64>::zeros(p, p);
    for i in 0..s.len() {
        let g = gradient(&s, i);
        for r in 0..p {
            for c in 0..p {
                want[(r, c)] += g[r] * g[c];
            }
        }
    }
    let diff = &got - &want;
    assert!(
        max_abs(&diff) <= 1e-10 * max_abs(&want),
        "{}",
        max_abs(&diff)
    );
    let trace: f64 = (0..p).map(|i| want[(i, i)]).sum();
    assert!((fisher.trace().unwrap() - trace).abs() <= 1e-10 * trace);
    assert_sample_is_the_sum(&fisher, s.len());
}

/// `H` on a sample with repeats is the sum of its examples' curvatures: a sample of every
/// example twice is `2H`, and samples add up.
fn assert_sample_is_the_sum(op: &dyn HessianOperator, n: usize) {
    assert_eq!(op.examples(), Some(n));
    let p = op.dim();
    let v = Mat::from_fn(2, p, |i, j| ((i * 3 + j * 5) % 11) as f64 / 5.0 - 1.0);
    let apply = |rows: Option<&[usize]>| {
        let mut out = Mat::zeros(2, p);
        match rows {
            None => op.apply(v.as_ref(), out.as_mut()).unwrap(),
            Some(r) => op.apply_examples(r, v.as_ref(), out.as_mut()).unwrap(),
        }
        out
    };
    let full = apply(None);
    let twice: Vec<usize> = (0..n).chain(0..n).collect();
    let diff = &apply(Some(&twice)) - &(&full * faer::Scale(2.0));
    assert!(max_abs(&diff) <= 1e-10 * max_abs(&full));
    let (front, back): (Vec<usize>, Vec<usize>) = (0..n).partition(|i| i % 3 == 0);
    let diff = &(&apply(Some(&front)) + &apply(Some(&back))) - &full;
    assert!(max_abs(&diff) <= 1e-10 * max_abs(&full));
    let mut out = Mat::zeros(2, p);
    assert!(op.apply_examples(&[n], v.as_ref(), out.as_mut()).is_err());
}

/// A trained-looking infl-nn MLP (a few SGD steps) written as a run with factor files.
struct Network {
    dir: tempfile::TempDir,
    model: Mlp,
    x: Array2<f32>,
    labels: Vec<i64>,
}

fn network() -> Network {
    let (n, t, d, k) = (90, 7, 5, 3);
    let x = Array2::from_shape_fn((n + t, d), |(i, j)| {
        ((i * 31 + j * 17) % 23) as f32 / 11.0 - 1.0 + if i % k == j % k { 0.8 } else { 0.0 }
    });
    let labels: Vec<i64> = (0..n + t).map(|i| (i % k) as i64).collect();
    let mut model = Mlp::new(d, &[6], k, 3).unwrap();
    let config = infl_nn::TrainConfig {
        epochs: 5,
        batch_size: 16,
        learning_rate: 0.1,
        ..Default::default()
    };
    let data = infl_nn::Dataset {
        x: x.slice(ndarray::s![..n, ..]),
        labels: &labels[..n],
        ids: None,
    };
    infl_nn::train(
        &mut model,
        data,
        &config,
        &mut |_: &[infl::Presentation]| {},
        &mut (),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let writer = RunWriter::new(dir.path(), FactorFiles::Write).unwrap();
    let ids: Vec<i64> = (0..(n + t) as i64).collect();
    let meta = CheckpointMeta {
        learning_rate: Some(0.1),
        epoch: Some(5),
    };
    let train = Split {
        x: x.slice(ndarray::s![..n, ..]),
        labels: &labels[..n],
        ids: &ids[..n],
        images: None,
    };
    let test = Split {
        x: x.slice(ndarray::s![n.., ..]),
        labels: &labels[n..],
        ids: &ids[n..],
        images: None,
    };
    writer
        .write("epoch-5", &model, &meta, train, Some(test))
        .unwrap();
    Network {
        dir,
        model,
        x,
        labels,
    }
}

fn factor_run(net: &Network, layers: Option<&[String]>) -> Run {
    let found = FactorRun::discover(net.dir.path().join("factors")).unwrap();
    infl::load_factor_run(&found, layers, Splits::TrainAndTest)
        .unwrap()
        .into()
}

fn influence(solver: Solver, curvature: Curvature, damping: f64) -> InfluenceFunction {
    InfluenceFunction {
        solver,
        curvature: Some(curvature),
        damping: Some(Damping::Value(damping)),
        ..Default::default()
    }
}

#[test]
fn the_network_hessian_on_the_last_layer_is_the_final_layer_hessian() {
    let net = network();
    let run = factor_run(&net, Some(&["fc2".to_string()]));
    let train = &run.factors("test").unwrap()[0].train;
    let n = train.len();
    let inputs = Matrix::from_fn(n, 5, |i, j| net.x[(i, j)]);
    let blocks = layout(train).unwrap();
    let hessian = |product| {
        let op = NetworkHessian::new(
            product,
            net.model.clone(),
            inputs.clone(),
            net.labels[..n].to_vec(),
            blocks.clone(),
        )
        .unwrap();
        op.assemble(&()).unwrap()
    };
    let LayerFactors::Linear { a, .. } = &train.layers[0].factors else {
        unreachable!()
    };
    let logits = net.model.logits(net.x.slice(ndarray::s![..n, ..])).unwrap();
    let logits: Vec<f32> = logits.iter().copied().collect();
    let last = FinalLayer::new(a, &logits, 3, Loss::CrossEntropy, Bias::Included).unwrap();
    let want = last.assemble(&()).unwrap();
    for product in [Product::Hessian, Product::GaussNewton] {
        let got = hessian(product);
        let diff = &got - &want;
        assert!(
            max_abs(&diff) <= 1e-5 * max_abs(&want),
            "{product:?}: {} of {}",
            max_abs(&diff),
            max_abs(&want)
        );
    }
}

#[test]
fn factor_path_scores_on_the_last_layer_equal_the_features_path() {
    let net = network();
    let cpu = CpuBackend::new();
    let layer = ["fc2".to_string()];
    let features = Run::Features(
        infl::load_run(
            &RunLayout::discover(net.dir.path()).unwrap(),
            "fc2",
            Splits::TrainAndTest,
        )
        .unwrap(),
    );
    let exact = InfluenceFunction {
        bias: Bias::Included,
        damping: Some(Damping::Value(1e-3)),
        ..Default::default()
    };
    let want = exact.scores(&cpu, &features, &()).unwrap().values;
    let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    for curvature in [Curvature::Hessian, Curvature::GaussNewton] {
        let est = influence(Solver::Exact, curvature, 1e-3);
        let got = est
            .scores(&cpu, &factor_run(&net, Some(&layer)), &())
            .unwrap()
            .values;
        let worst = (got.iter().zip(&want)).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst <= 1e-4 * scale, "{curvature:?}: {worst} of {scale}");
    }
}

#[test]
fn solvers_agree_on_the_whole_network() {
    let net = network();
    let run = factor_run(&net, None);
    let cpu = CpuBackend::new();
    for curvature in [
        Curvature::Fisher,
        Curvature::TrueFisher,
        Curvature::GaussNewton,
        Curvature::Hessian,
    ] {
        let damping = 0.2; // above the ReLU Hessian's most negative eigenvalue (about -0.07)
        let scores = |solver| {
            influence(solver, curvature, damping)
                .scores(&cpu, &run, &())
                .unwrap()
                .values
        };
        let exact = scores(Solver::Exact);
        let scale = exact.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        assert!(scale > 0.0);
        let within = |got: &[f32], tol: f32| {
            let worst = (got.iter().zip(&exact)).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(worst <= tol * scale, "{curvature:?}: {worst} of {scale}");
        };
        within(&scores(Solver::cg()), 1e-4);
        let minibatch = Solver::Lissa {
            depth: 1000,
            scale: None,
            batch: Some(30),
            repeats: 8,
            seed: 0,
        };
        within(&scores(minibatch), 0.2);
        within(
            &scores(Solver::Lissa {
                depth: 3000,
                scale: None,
                batch: None,
                repeats: 1,
                seed: 0,
            }),
            1e-2,
        );
        let full = Solver::Arnoldi {
            dimension: 1000,
            eigenpairs: 1000,
            seed: 1,
        };
        within(&scores(full), 1e-3);
        // Self-influence is the diagonal of the training examples' own scores.
        let own = influence(Solver::Exact, curvature, damping)
            .self_influence(&cpu, &run)
            .unwrap()
            .values;
        assert!(own.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn the_hessian_of_a_relu_network_is_not_the_gauss_newton_matrix() {
    let net = network();
    let run = factor_run(&net, None);
    let train = &run.factors("test").unwrap()[0].train;
    let n = train.len();
    let inputs = Matrix::from_fn(n, 5, |i, j| net.x[(i, j)]);
    let blocks = layout(train).unwrap();
    let op = |product| {
        NetworkHessian::new(
            product,
            net.model.clone(),
            inputs.clone(),
            net.labels[..n].to_vec(),
            blocks.clone(),
        )
        .unwrap()
        .assemble(&())
        .unwrap()
    };
    let sampled = NetworkHessian::new(
        Product::Hessian,
        net.model.clone(),
        inputs.clone(),
        net.labels[..n].to_vec(),
        blocks.clone(),
    )
    .unwrap();
    assert_sample_is_the_sum(&sampled, n);
    let (h, gn) = (op(Product::Hessian), op(Product::GaussNewton));
    let diff = &h - &gn;
    assert!(
        max_abs(&diff) > 1e-3 * max_abs(&gn),
        "the hidden layer's curvature differs"
    );
    // Both symmetric.
    for m in [&h, &gn] {
        let asym = m - m.transpose();
        assert!(max_abs(&asym) <= 1e-12 * max_abs(m));
    }
}

#[test]
fn ekfac_on_the_true_fisher_fits_the_sampled_gradients() {
    let net = network();
    let run = factor_run(&net, None);
    let cpu = CpuBackend::new();
    let ekfac = |curvature| {
        InfluenceFunction {
            solver: Solver::Ekfac,
            curvature,
            damping: Some(Damping::Heuristic),
            ..Default::default()
        }
        .scores(&cpu, &run, &())
        .unwrap()
        .values
    };
    let (empirical, default) = (ekfac(Some(Curvature::Fisher)), ekfac(None));
    assert_eq!(empirical, default, "the empirical Fisher is the default");
    // The true Fisher's fit is the empirical fit of a run whose gradients are the sampled
    // ones, scoring the true labels' gradients.
    let train = &run.factors("test").unwrap()[0].train;
    let sampled = infl::curvature::with_sampled_gradients(train).unwrap();
    let fit = infl::kfac::Fit::new(&sampled, infl::kfac::Strategy::Ekfac, &()).unwrap();
    let test = run.factors("test").unwrap()[0].test.as_ref().unwrap();
    let x = fit.precondition(test, Damping::Heuristic).unwrap();
    let terms = fit.terms(train, &x, "t").unwrap();
    let want = infl::Engine::new(CpuBackend::new())
        .scores(&infl::TermSet { terms }, &())
        .unwrap();
    let got = ekfac(Some(Curvature::TrueFisher));
    assert_eq!(got, want);
    assert_ne!(got, empirical);
}

#[test]
fn errors_name_what_is_missing() {
    let net = network();
    let cpu = CpuBackend::new();
    let run = factor_run(&net, None);
    // A checkpoint that is not beside the factor files.
    std::fs::remove_file(net.dir.path().join("epoch-5.safetensors")).unwrap();
    let err = influence(Solver::cg(), Curvature::Hessian, 0.1)
        .scores(&cpu, &run, &())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("epoch-5.safetensors") && err.contains("--curvature fisher"),
        "{err}"
    );
    // The Hessian of a ReLU network without damping: CG names the damping.
    let net = network();
    let err = influence(Solver::cg(), Curvature::Hessian, 0.0)
        .scores(&cpu, &factor_run(&net, None), &())
        .unwrap_err()
        .to_string();
    assert!(err.contains("damping"), "{err}");
    // K-FAC fits a Fisher, not the network's Hessian.
    let kfac = InfluenceFunction {
        solver: Solver::Ekfac,
        curvature: Some(Curvature::Hessian),
        ..Default::default()
    };
    let err = kfac.scores(&cpu, &run, &()).unwrap_err().to_string();
    assert!(err.contains("--curvature hessian is for"), "{err}");
}
