//! Influence functions on the final layer: the Hessian operator is the Hessian (against an
//! explicit f64 sum and against central differences of the summed loss's gradient), the
//! solvers solve `(H + λI) x = b`, and the estimator's scores, top-k and self-influence
//! through the engine equal `∇ℓ_qᵀ (H + λI)⁻¹ ∇ℓ_i` computed densely here in f64.
//!
//! No expected numbers are written down: every check compares two computations.

mod common;

use faer::{Mat, MatMut, MatRef};
use infl::curvature::{Damping, FinalLayer, HessianOperator, Inverse, Solver};
use infl::estimators::Convention;
use infl::{
    Bias, Checkpoint, CheckpointData, CpuBackend, Estimator, Examples, InfluenceFunction, Matrix,
    Run, run::Loss,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn uniform(rng: &mut ChaCha8Rng) -> f32 {
    use rand::Rng;
    ((rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64) as f32 * 2.0 - 1.0
}

fn matrix(rng: &mut ChaCha8Rng, rows: usize, cols: usize, scale: f32) -> Matrix {
    Matrix::from_fn(rows, cols, |_, _| scale * uniform(rng))
}

/// Examples with labels (CE) or targets (MSE).
fn examples(rng: &mut ChaCha8Rng, n: usize, d: usize, k: usize, loss: Loss) -> Examples {
    let features = matrix(rng, n, d, 1.0);
    match loss {
        Loss::CrossEntropy => {
            let labels = (0..n).map(|i| ((i * 7 + 3) % k) as i64).collect();
            Examples::classified(features, labels)
        }
        Loss::MeanSquaredError => Examples {
            targets: Some(matrix(rng, n, k, 1.0)),
            labels: None,
            ..Examples::classified(features, Vec::new())
        },
    }
}

struct Case {
    run: Run,
    weight: Matrix,
    bias: Option<Vec<f32>>,
}

/// Two checkpoints (only the last one counts), `n` training and `t` test examples.
fn case(seed: u64, n: usize, t: usize, d: usize, k: usize, loss: Loss) -> Case {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let train = examples(&mut rng, n, d, k, loss);
    let test = examples(&mut rng, t, d, k, loss);
    let mut last = None;
    let checkpoints: Vec<CheckpointData> = (0..2)
        .map(|c| {
            let weight = matrix(&mut rng, k, d, 1.5);
            let bias: Vec<f32> = (0..k).map(|_| uniform(&mut rng)).collect();
            last = Some((weight.clone(), bias.clone()));
            CheckpointData {
                checkpoint: Checkpoint {
                    name: format!("c{c}"),
                    source: Default::default(),
                    learning_rate: Some(0.1),
                    weight,
                    bias: Some(bias),
                },
                train: train.clone(),
                test: Some(test.clone()),
            }
        })
        .collect();
    let (weight, bias) = last.unwrap();
    Case {
        run: Run::from(checkpoints),
        weight,
        bias: Some(bias),
    }
}

fn split(run: &Run, test: bool) -> &Examples {
    let d = &run.features("test").unwrap()[1];
    if test {
        d.test.as_ref().unwrap()
    } else {
        &d.train
    }
}

/// The summed loss's gradient w.r.t. `θ` (`[K, D']` row-major, the bias in column D when
/// `with_bias`), in f64, at weights `theta` — written out here from the definitions.
fn gradient(
    e: &Examples,
    theta: &[f64],
    k: usize,
    with_bias: bool,
    loss: Loss,
    fixed_bias: &[f64],
) -> Vec<f64> {
    let d = e.features.cols();
    let w = d + usize::from(with_bias);
    let mut grad = vec![0.0; k * w];
    for i in 0..e.len() {
        let a: Vec<f64> = e
            .features
            .view()
            .row(i)
            .iter()
            .map(|&x| f64::from(x))
            .collect();
        let z: Vec<f64> = (0..k)
            .map(|r| {
                let dot: f64 = (0..d).map(|j| theta[r * w + j] * a[j]).sum();
                dot + if with_bias {
                    theta[r * w + d]
                } else {
                    fixed_bias[r]
                }
            })
            .collect();
        let j: Vec<f64> = match loss {
            Loss::CrossEntropy => {
                let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let s: f64 = z.iter().map(|x| (x - m).exp()).sum();
                let y = e.labels.as_ref().unwrap()[i] as usize;
                (0..k)
                    .map(|r| (z[r] - m).exp() / s - f64::from(u8::from(r == y)))
                    .collect()
            }
            Loss::MeanSquaredError => {
                let y = e.targets.as_ref().unwrap().view().row(i).to_vec();
                (0..k).map(|r| 2.0 * (z[r] - f64::from(y[r]))).collect()
            }
        };
        for r in 0..k {
            for c in 0..w {
                grad[r * w + c] += j[r] * if c < d { a[c] } else { 1.0 };
            }
        }
    }
    grad
}

fn theta(c: &Case, with_bias: bool) -> Vec<f64> {
    let (k, d) = (c.weight.rows(), c.weight.cols());
    let w = d + usize::from(with_bias);
    (0..k * w)
        .map(|i| {
            let (r, j) = (i / w, i % w);
            if j < d {
                f64::from(c.weight.view().row(r)[j])
            } else {
                f64::from(c.bias.as_ref().unwrap()[r])
            }
        })
        .collect()
}

/// The last checkpoint's bias in f64 (the logits' offset when the bias is no parameter).
fn fixed_bias(c: &Case) -> Vec<f64> {
    let bias = c.bias.as_ref().unwrap();
    bias.iter().map(|&x| f64::from(x)).collect()
}

/// The operator of the case's last checkpoint (through the estimator's own inputs).
fn operator(c: &Case, loss: Loss, bias: Bias) -> FinalLayer {
    let e = split(&c.run, false);
    let (k, d) = (c.weight.rows(), c.weight.cols());
    let b = c.bias.as_ref().unwrap();
    let logits: Vec<f32> = (0..e.len())
        .flat_map(|i| {
            let a = e.features.view().row(i).to_vec();
            (0..k)
                .map(move |r| {
                    (0..d)
                        .map(|j| c.weight.view().row(r)[j] * a[j])
                        .sum::<f32>()
                        + b[r]
                })
                .collect::<Vec<_>>()
        })
        .collect();
    FinalLayer::new(&e.features, &logits, k, loss, bias).unwrap()
}

fn max_abs(m: MatRef<'_, f64>) -> f64 {
    let mut x: f64 = 0.0;
    for i in 0..m.nrows() {
        for j in 0..m.ncols() {
            x = x.max(m[(i, j)].abs());
        }
    }
    x
}

#[test]
fn the_operator_is_the_hessian_of_the_summed_loss() {
    for loss in [Loss::CrossEntropy, Loss::MeanSquaredError] {
        for bias in [Bias::Excluded, Bias::Included] {
            let c = case(1, 23, 4, 5, 3, loss);
            let op = operator(&c, loss, bias);
            let n = op.dim();
            let with_bias = bias == Bias::Included;
            assert_eq!(n, 3 * (5 + usize::from(with_bias)));
            let h = op.assemble(&()).unwrap();
            // The generic assembly (apply to the identity) equals the blockwise one.
            struct Generic<'a>(&'a FinalLayer);
            impl HessianOperator for Generic<'_> {
                fn dim(&self) -> usize {
                    self.0.dim()
                }
                fn apply(&self, v: MatRef<'_, f64>, out: MatMut<'_, f64>) -> infl::Result<()> {
                    self.0.apply(v, out)
                }
            }
            let generic = Generic(&op).assemble(&()).unwrap();
            let scale = max_abs(h.as_ref());
            assert!(
                max_abs((&h - &generic).as_ref()) <= 1e-12 * scale,
                "{loss:?} {bias:?}"
            );
            // Central differences of the summed loss's gradient, column by column.
            let t0 = theta(&c, with_bias);
            let fixed = fixed_bias(&c);
            let e = split(&c.run, false);
            let eps = 1e-5;
            for col in 0..n {
                let (mut plus, mut minus) = (t0.clone(), t0.clone());
                plus[col] += eps;
                minus[col] -= eps;
                let gp = gradient(e, &plus, 3, with_bias, loss, &fixed);
                let gm = gradient(e, &minus, 3, with_bias, loss, &fixed);
                for row in 0..n {
                    let fd = (gp[row] - gm[row]) / (2.0 * eps);
                    assert!(
                        (fd - h[(row, col)]).abs() <= 1e-6 * scale,
                        "{loss:?} {bias:?} H[{row}, {col}]: {} vs finite difference {fd}",
                        h[(row, col)]
                    );
                }
            }
            // Symmetric, and apply agrees with the assembled matrix on a block.
            assert!(max_abs((&h - h.transpose()).as_ref()) <= 1e-12 * scale);
            let v = Mat::from_fn(4, n, |i, j| ((i * 31 + j * 7) % 11) as f64 - 5.0);
            let mut hv = Mat::zeros(4, n);
            op.apply(v.as_ref(), hv.as_mut()).unwrap();
            let want = &v * &h;
            assert!(max_abs((&hv - &want).as_ref()) <= 1e-10 * max_abs(want.as_ref()));
        }
    }
}

#[test]
fn both_solvers_solve_the_damped_system_and_agree() {
    let c = case(2, 40, 3, 6, 4, Loss::CrossEntropy);
    let op = operator(&c, Loss::CrossEntropy, Bias::Included);
    let n = op.dim();
    let b = Mat::from_fn(5, n, |i, j| ((i * 13 + j * 5) % 9) as f64 - 4.0);
    let h = op.assemble(&()).unwrap();
    let damping = 1e-2;
    let mut solutions = Vec::new();
    for solver in [Solver::Exact, Solver::cg()] {
        let mut x = b.clone();
        Inverse::new(&op, damping, solver, &())
            .unwrap()
            .solve_rows(x.as_mut(), &())
            .unwrap();
        // (H + λI) x = b, row by row.
        let back = &x * &h + &x * faer::Scale(damping);
        let residual = max_abs((&back - &b).as_ref()) / max_abs(b.as_ref());
        assert!(
            residual <= 1e-5,
            "{solver:?}: relative residual {residual:e}"
        );
        solutions.push(x);
    }
    let diff = max_abs((&solutions[0] - &solutions[1]).as_ref()) / max_abs(solutions[0].as_ref());
    assert!(diff <= 1e-4, "exact vs CG: {diff:e}");
}

#[test]
fn refusals_name_the_damping_that_works() {
    /// diag(1, -2): indefinite.
    struct Indefinite;
    impl HessianOperator for Indefinite {
        fn dim(&self) -> usize {
            2
        }
        fn apply(&self, v: MatRef<'_, f64>, mut out: MatMut<'_, f64>) -> infl::Result<()> {
            for i in 0..v.nrows() {
                out[(i, 0)] = v[(i, 0)];
                out[(i, 1)] = -2.0 * v[(i, 1)];
            }
            Ok(())
        }
    }
    let err = Inverse::new(&Indefinite, 0.5, Solver::Exact, &())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not positive definite") && err.contains("at least 2.000e0"),
        "{err}"
    );
    // With that damping it works.
    assert!(Inverse::new(&Indefinite, 2.0 + 1e-6, Solver::Exact, &()).is_ok());
    let mut b = Mat::from_fn(1, 2, |_, _| 1.0);
    let cg = Inverse::new(&Indefinite, 0.5, Solver::cg(), &()).unwrap();
    let err = cg.solve_rows(b.as_mut(), &()).unwrap_err().to_string();
    assert!(
        err.contains("not positive definite along a CG direction"),
        "{err}"
    );
    for bad in [-1.0, f64::NAN] {
        let err = Inverse::new(&Indefinite, bad, Solver::Exact, &())
            .unwrap_err()
            .to_string();
        assert!(err.contains("damping"), "{err}");
    }
    let tight = Solver::Cg {
        tolerance: 1e-30,
        max_iterations: 1,
    };
    let c = case(3, 30, 2, 4, 3, Loss::CrossEntropy);
    let op = operator(&c, Loss::CrossEntropy, Bias::Excluded);
    let mut b = Mat::from_fn(2, op.dim(), |i, j| (i + j) as f64);
    let err = Inverse::new(&op, 1e-3, tight, &())
        .unwrap()
        .solve_rows(b.as_mut(), &())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("did not reach") && err.contains("1 iterations"),
        "{err}"
    );
}

/// `∇ℓ_qᵀ (H + λI)⁻¹ ∇ℓ_i` for every pair, densely in f64 (the f64 gradients written out
/// above, the assembled Hessian, faer's dense LU).
fn dense_scores(c: &Case, loss: Loss, bias: Bias, damping: f64) -> Vec<f64> {
    let with_bias = bias == Bias::Included;
    let k = c.weight.rows();
    let t0 = theta(c, with_bias);
    let fixed = fixed_bias(c);
    let per = |e: &Examples| -> Vec<Vec<f64>> {
        (0..e.len())
            .map(|i| gradient(&e.select(&[i]), &t0, k, with_bias, loss, &fixed))
            .collect()
    };
    let (train, test) = (per(split(&c.run, false)), per(split(&c.run, true)));
    let op = operator(c, loss, bias);
    let n = op.dim();
    let mut h = op.assemble(&()).unwrap();
    for i in 0..n {
        h[(i, i)] += damping;
    }
    let lu = h.partial_piv_lu();
    use faer::linalg::solvers::Solve;
    let mut out = Vec::new();
    for q in &test {
        let x = lu.solve(Mat::from_fn(n, 1, |i, _| q[i]));
        for g in &train {
            out.push((0..n).map(|i| x[(i, 0)] * g[i]).sum());
        }
    }
    out
}

#[test]
fn scores_topk_and_self_influence_are_the_dense_formula() {
    let cpu = CpuBackend::new();
    for (loss, bias, solver) in [
        (Loss::CrossEntropy, Bias::Excluded, Solver::Exact),
        (Loss::CrossEntropy, Bias::Included, Solver::Exact),
        (Loss::CrossEntropy, Bias::Included, Solver::cg()),
        (Loss::MeanSquaredError, Bias::Included, Solver::Exact),
    ] {
        let c = case(4, 37, 6, 7, 4, loss);
        let est = InfluenceFunction {
            loss,
            bias,
            solver,
            convention: Convention::Captum,
            damping: Some(Damping::Value(1e-3)),
            ..InfluenceFunction::default()
        };
        let what = format!("{loss:?} {bias:?} {solver:?}");
        let got = est.scores(&cpu, &c.run, &()).unwrap().values;
        let want = dense_scores(&c, loss, bias, 1e-3);
        let scale = want.iter().fold(0f64, |m, x| m.max(x.abs()));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (f64::from(*g) - w).abs() <= 2e-5 * scale,
                "{what} pair {i}: {g} vs {w}"
            );
        }
        // Top-k is the engine's streamed top-k of the same terms.
        let top = est.topk(&cpu, &c.run, 3, &()).unwrap().values;
        let full = infl::TopKRows::from_full(&got, 37, 3);
        assert_eq!(
            top.proponents
                .iter()
                .map(|l| l.iter().map(|r| r.index).collect::<Vec<_>>())
                .collect::<Vec<_>>(),
            full.proponents
                .iter()
                .map(|l| l.iter().map(|r| r.index).collect::<Vec<_>>())
                .collect::<Vec<_>>(),
            "{what}"
        );
        // Self-influence is the diagonal of the scores of the training set against itself.
        let mut own = c.run.clone();
        if let Run::Features(ckpts) = &mut own {
            for d in ckpts {
                d.test = Some(d.train.clone());
            }
        }
        let diag = est.scores(&cpu, &own, &()).unwrap().values;
        let si = est.self_influence(&cpu, &c.run).unwrap().values;
        assert_eq!(si.len(), 37);
        for (i, s) in si.iter().enumerate() {
            let d = diag[i * 37 + i];
            assert!(
                (s - d).abs() <= 1e-4 * d.abs().max(1e-6),
                "{what} self-influence {i}: {s} vs {d}"
            );
            assert!(*s > 0.0, "{what}: (H + λI)⁻¹ is positive definite");
        }
    }
}

#[test]
fn scores_on_the_gpu_equal_the_cpu() {
    let Some(gpu) = infl::select_backend(infl::BackendChoice::Gpu, None).ok() else {
        let required = std::env::var("INFL_REQUIRE_GPU").is_ok_and(|v| v == "1");
        assert!(!required, "INFL_REQUIRE_GPU=1 and no GPU adapter was found");
        eprintln!("no GPU adapter: skipped (set INFL_REQUIRE_GPU=1 to fail instead)");
        return;
    };
    let c = case(5, 137, 9, 63, 10, Loss::CrossEntropy);
    let est = InfluenceFunction {
        bias: Bias::Included,
        convention: Convention::Captum,
        damping: Some(Damping::Value(1e-3)),
        ..InfluenceFunction::default()
    };
    let cpu = est.scores(&CpuBackend::new(), &c.run, &()).unwrap().values;
    let gpu = est.scores(&*gpu, &c.run, &()).unwrap().values;
    let scale = cpu.iter().fold(0f32, |m, x| m.max(x.abs()));
    for (a, b) in cpu.iter().zip(&gpu) {
        assert!((a - b).abs() <= 1e-4 * scale, "{a} vs {b}");
    }
}

/// `(H + λI)⁻¹ b` by the exact solver, for comparisons.
fn exact_solution(op: &FinalLayer, damping: f64, b: &Mat<f64>) -> Mat<f64> {
    let mut x = b.clone();
    let inverse = Inverse::new(op, damping, Solver::Exact, &()).unwrap();
    inverse.solve_rows(x.as_mut(), &()).unwrap();
    x
}

fn relative(a: &Mat<f64>, b: &Mat<f64>) -> f64 {
    max_abs((a - b).as_ref()) / max_abs(b.as_ref())
}

#[test]
fn lissa_converges_to_the_exact_solution_and_reports_divergence() {
    let c = case(6, 30, 3, 5, 3, Loss::CrossEntropy);
    let op = operator(&c, Loss::CrossEntropy, Bias::Included);
    let b = Mat::from_fn(3, op.dim(), |i, j| ((i * 7 + j * 3) % 5) as f64 - 2.0);
    // A damping that makes H + λI well conditioned, so 5000 steps converge.
    let damping = 0.5;
    let want = exact_solution(&op, damping, &b);
    let mut x = b.clone();
    Inverse::new(&op, damping, Solver::lissa(), &())
        .unwrap()
        .solve_rows(x.as_mut(), &())
        .unwrap();
    let err = relative(&x, &want);
    assert!(err <= 1e-8, "LiSSA vs exact: {err:e}");
    // A scale far below the largest eigenvalue diverges, and the error says what works.
    let small = Solver::Lissa {
        depth: 5000,
        scale: Some(1e-3),
        batch: None,
        repeats: 1,
        seed: 0,
    };
    let mut x = b.clone();
    let err = Inverse::new(&op, damping, small, &())
        .unwrap()
        .solve_rows(x.as_mut(), &())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("LiSSA diverged") && err.contains("use a scale of at least"),
        "{err}"
    );
}

#[test]
fn minibatch_lissa_estimates_the_solution_and_is_seeded() {
    let c = case(8, 200, 3, 5, 3, Loss::CrossEntropy);
    let op = operator(&c, Loss::CrossEntropy, Bias::Included);
    // A sample of every example, in order, is the operator itself.
    let all: Vec<usize> = (0..200).collect();
    let v = Mat::from_fn(2, op.dim(), |i, j| ((i * 5 + j) % 7) as f64 - 3.0);
    let (mut full, mut sampled) = (Mat::zeros(2, op.dim()), Mat::zeros(2, op.dim()));
    op.apply(v.as_ref(), full.as_mut()).unwrap();
    op.apply_examples(&all, v.as_ref(), sampled.as_mut())
        .unwrap();
    assert!(relative(&sampled, &full) <= 1e-12);
    assert!(
        op.apply_examples(&[200], v.as_ref(), sampled.as_mut())
            .is_err()
    );

    let b = Mat::from_fn(3, op.dim(), |i, j| ((i * 7 + j * 3) % 5) as f64 - 2.0);
    let damping = 0.5 * 200.0 / 30.0; // as well conditioned as the full-batch test's
    let want = exact_solution(&op, damping, &b);
    let solve = |batch, repeats, seed| {
        let solver = Solver::Lissa {
            depth: 1000,
            scale: None,
            batch: Some(batch),
            repeats,
            seed,
        };
        let mut x = b.clone();
        Inverse::new(&op, damping, solver, &())
            .unwrap()
            .solve_rows(x.as_mut(), &())
            .unwrap();
        x
    };
    let one = solve(50, 1, 0);
    let many = solve(50, 16, 0);
    let (e1, e16) = (relative(&one, &want), relative(&many, &want));
    assert!(e16 <= 0.1, "16 repeats of batch 50: {e16:e}");
    assert!(e16 < e1, "averaging helps: {e16:e} vs {e1:e}");
    // Seeded: the same seed gives the same bits, another seed another estimate.
    assert_eq!(solve(50, 2, 3), solve(50, 2, 3));
    assert_ne!(solve(50, 2, 3), solve(50, 2, 4));
    // Repeats without minibatches are identical, so refused; a saved Hessian cannot sample.
    let refused = |op: &dyn HessianOperator, batch, repeats| {
        let solver = Solver::Lissa {
            depth: 10,
            scale: Some(1.0),
            batch,
            repeats,
            seed: 0,
        };
        Inverse::new(op, damping, solver, &())
            .unwrap_err()
            .to_string()
    };
    assert!(refused(&op, None, 2).contains("batch size"));
    let saved = infl::curvature::SavedHessian {
        hessian: op.assemble(&()).unwrap(),
        identity: infl::curvature::Identity::of(
            &c.run.features("test").unwrap()[1],
            Loss::CrossEntropy,
            Bias::Included,
        ),
        source: Default::default(),
    };
    assert!(refused(&saved, Some(10), 1).contains("full-batch"));
}

#[test]
fn arnoldi_is_the_top_eigenpairs_inverse() {
    let c = case(7, 30, 3, 5, 3, Loss::CrossEntropy);
    let op = operator(&c, Loss::CrossEntropy, Bias::Excluded);
    let n = op.dim();
    // Right-hand sides as influence has them: per-example gradients, orthogonal to the
    // softmax's null directions (a random Krylov start spans one vector of each repeated
    // eigenspace, so only such right-hand sides can be solved exactly).
    let (e, t0, fixed) = (split(&c.run, false), theta(&c, false), fixed_bias(&c));
    let rows: Vec<Vec<f64>> = (0..4)
        .map(|i| gradient(&e.select(&[i]), &t0, 3, false, Loss::CrossEntropy, &fixed))
        .collect();
    let b = Mat::from_fn(4, n, |i, j| rows[i][j]);
    let damping = 1e-2;
    let solve = |solver| {
        let mut x = b.clone();
        Inverse::new(&op, damping, solver, &())
            .unwrap()
            .solve_rows(x.as_mut(), &())
            .unwrap();
        x
    };
    // Every eigenpair of a full Krylov space: the exact inverse.
    let full = solve(Solver::Arnoldi {
        dimension: n,
        eigenpairs: n,
        seed: 3,
    });
    let err = relative(&full, &exact_solution(&op, damping, &b));
    assert!(err <= 1e-6, "full Arnoldi vs exact: {err:e}");
    // The top r: the dense eigendecomposition's top-r inverse.
    let r = 5;
    let top = solve(Solver::Arnoldi {
        dimension: n,
        eigenpairs: r,
        seed: 3,
    });
    let h = op.assemble(&()).unwrap();
    let eig = h.self_adjoint_eigen(faer::Side::Lower).unwrap();
    let (mu, u) = (eig.S(), eig.U());
    let want = Mat::from_fn(4, n, |q, j| {
        (n - r..n)
            .map(|e| {
                let c: f64 = (0..n).map(|i| u[(i, e)] * b[(q, i)]).sum();
                u[(j, e)] * c / (mu[e] + damping)
            })
            .sum()
    });
    let err = relative(&top, &want);
    assert!(err <= 1e-6, "top-{r} Arnoldi vs dense: {err:e}");
    // Seeded: the same answer twice.
    let again = solve(Solver::Arnoldi {
        dimension: n,
        eigenpairs: r,
        seed: 3,
    });
    assert_eq!(max_abs((&top - &again).as_ref()), 0.0);
}

#[test]
fn every_solver_scores_through_the_engine() {
    let cpu = CpuBackend::new();
    let c = case(8, 25, 4, 5, 3, Loss::CrossEntropy);
    let scores = |solver| {
        let est = InfluenceFunction {
            bias: Bias::Included,
            solver,
            convention: Convention::Captum,
            damping: Some(Damping::Value(0.5)),
            ..InfluenceFunction::default()
        };
        est.scores(&cpu, &c.run, &()).unwrap().values
    };
    let exact = scores(Solver::Exact);
    let scale = exact.iter().fold(0f32, |m, x| m.max(x.abs()));
    let n = 3 * 6;
    for solver in [
        Solver::cg(),
        Solver::lissa(),
        Solver::Arnoldi {
            dimension: n,
            eigenpairs: n,
            seed: 1,
        },
    ] {
        let got = scores(solver);
        for (a, b) in got.iter().zip(&exact) {
            assert!((a - b).abs() <= 1e-5 * scale, "{solver:?}: {a} vs {b}");
        }
    }
}

#[test]
fn kronfluence_scores_are_n_times_captums_at_n_times_the_damping() {
    let cpu = CpuBackend::new();
    let c = case(9, 33, 5, 6, 4, Loss::CrossEntropy);
    let n = 33.0;
    let est = |convention, damping| InfluenceFunction {
        bias: Bias::Included,
        convention,
        damping: Some(damping),
        ..InfluenceFunction::default()
    };
    let kron = est(Convention::Kronfluence, Damping::Value(1e-3));
    assert_eq!(
        InfluenceFunction::default().convention,
        Convention::Kronfluence
    );
    let captum = est(Convention::Captum, Damping::Value(1e-3 * n));
    let (k, c2) = (
        kron.scores(&cpu, &c.run, &()).unwrap().values,
        captum.scores(&cpu, &c.run, &()).unwrap().values,
    );
    let scale = k.iter().fold(0f32, |m, x| m.max(x.abs()));
    for (a, b) in k.iter().zip(&c2) {
        assert!((a - b * n as f32).abs() <= 1e-4 * scale, "{a} vs {n} x {b}");
    }
    // The heuristic: 0.1 × the mean eigenvalue of the convention's Hessian.
    let op = operator(&c, Loss::CrossEntropy, Bias::Included);
    let h = op.assemble(&()).unwrap();
    let mean = (0..h.nrows()).map(|i| h[(i, i)]).sum::<f64>() / h.nrows() as f64;
    assert!((Damping::Heuristic.value(&op).unwrap() - 0.1 * mean).abs() <= 1e-9 * mean);
    let heuristic = est(Convention::Kronfluence, Damping::Heuristic);
    let fixed = est(Convention::Kronfluence, Damping::Value(0.1 * mean / n));
    assert_eq!(
        heuristic.scores(&cpu, &c.run, &()).unwrap().values,
        fixed.scores(&cpu, &c.run, &()).unwrap().values
    );
}

/// On factor files (K-FAC and EK-FAC, layers with and without positions): self-influence
/// is the diagonal of the scores of the training set against itself.
#[test]
fn factor_file_self_influence_is_the_diagonal_of_the_scores() {
    let cpu = CpuBackend::new();
    let root =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/captum_tracincp");
    for (case, layers) in [
        ("mlp/factors", None),
        ("cnn/factors", Some(["conv1", "fc"])),
    ] {
        let found = infl::io::FactorRun::discover(root.join(case)).unwrap();
        let layers = layers.map(|l| l.map(String::from).to_vec());
        let mut ckpts =
            infl::load_factor_run(&found, layers.as_deref(), infl::Splits::TrainAndTest).unwrap();
        for c in &mut ckpts {
            c.test = Some(c.train.clone());
        }
        let run = Run::from(ckpts);
        for solver in [Solver::Kfac, Solver::Ekfac] {
            let est = InfluenceFunction {
                solver,
                damping: Some(Damping::Heuristic),
                ..InfluenceFunction::default()
            };
            let scores = est.scores(&cpu, &run, &()).unwrap().values;
            let si = est.self_influence(&cpu, &run).unwrap().values;
            let n = si.len();
            assert_eq!(scores.len(), n * n);
            for (i, s) in si.iter().enumerate() {
                let d = scores[i * n + i];
                assert!(
                    (s - d).abs() <= 1e-4 * d.abs(),
                    "{case} {solver:?} {i}: {s} vs {d}"
                );
                assert!(*s > 0.0);
            }
        }
    }
}

#[test]
fn the_memory_plan_counts_what_each_solver_holds() {
    let c = case(10, 40, 3, 7, 5, Loss::CrossEntropy);
    let total = |p: &infl::estimators::MemoryPlan| p.needs.iter().map(|n| n.bytes).sum::<f64>();
    let plan = |solver: Solver| {
        let est = InfluenceFunction {
            solver,
            ..InfluenceFunction::default()
        };
        total(&est.memory(&c.run).unwrap())
    };
    // p = 5 · (7 + 1) parameters, 40 training and 3 test examples, all f64: the inputs
    // [40, 8], the test gradients [3, p], and per solver its own state.
    let p = 40.0;
    let common = 40.0 * 8.0 * 8.0 + 3.0 * p * 8.0;
    // The exact solver: H, its damped copy and its factor.
    assert_eq!(plan(Solver::Exact), common + 3.0 * p * p * 8.0);
    // CG: six blocks of 64 vectors, and the operator's [N, 64 · K] product of a block.
    let chunk = infl::curvature::SOLVE_CHUNK as f64;
    let product = 40.0 * chunk * 5.0 * 8.0;
    assert_eq!(plan(Solver::cg()), common + product + 6.0 * chunk * p * 8.0);
    assert_eq!(
        plan(Solver::lissa()),
        common + product + 4.0 * chunk * p * 8.0
    );
    // Arnoldi: a basis of min(dimension, p) vectors (and its restriction), the eigenvectors.
    let arnoldi = Solver::Arnoldi {
        dimension: 30,
        eigenpairs: 10,
        seed: 0,
    };
    assert_eq!(plan(arnoldi), common + (30.0 * (p + 30.0) + 10.0 * p) * 8.0);
    assert!(infl::TracInCPFast::default().memory(&c.run).is_none());
}

/// K-FAC's plan on factor files grows with each layer's inputs² + outputs², the operator
/// solvers' with the parameters they invert jointly.
#[test]
fn the_memory_plan_on_factor_files_counts_kfac_factors_and_the_joint_inverse() {
    let root =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/captum_tracincp");
    let found = infl::io::FactorRun::discover(root.join("mlp/factors")).unwrap();
    let layers = ["fc1".to_string(), "fc2".to_string()];
    let run = Run::from(
        infl::load_factor_run(&found, Some(&layers[..]), infl::Splits::TrainAndTest).unwrap(),
    );
    // fc1: 10 outputs of 6 inputs + bias; fc2: 8 of 10 + bias; 7 test examples.
    let (widths, outputs) = ([7usize, 11], [10usize, 8]);
    let p: usize = widths.iter().zip(&outputs).map(|(w, k)| w * k).sum();
    let total = |solver: Solver| {
        let est = InfluenceFunction {
            solver,
            ..InfluenceFunction::default()
        };
        let plan = est.memory(&run).unwrap();
        plan.needs.iter().map(|n| n.bytes).sum::<f64>()
    };
    let factors: usize = (widths.iter().zip(&outputs))
        .map(|(w, k)| 2 * (w * w + k * k) + w * k)
        .sum();
    let test = 7 * p;
    assert_eq!(total(Solver::Ekfac), ((factors + test) * 8) as f64);
    assert_eq!(total(Solver::Kfac), total(Solver::Ekfac));
    assert_eq!(total(Solver::Exact), ((3 * p * p + test) * 8) as f64);
}

/// A [`Progress`](infl::Progress) that records each phase: its name, its total, and every
/// advance, checking that advances come inside a phase.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<Phase>>);

#[derive(Clone, Debug)]
struct Phase {
    name: String,
    total: u64,
    advances: Vec<u64>,
    finished: bool,
}

impl infl::Progress for Recorder {
    fn start(&self, what: &str, total: u64) {
        let mut phases = self.0.lock().unwrap();
        if let Some(open) = phases.last() {
            assert!(open.finished, "{what} starts inside {open:?}");
        }
        phases.push(Phase {
            name: what.to_string(),
            total,
            advances: Vec::new(),
            finished: false,
        });
    }

    fn advance(&self, n: u64) {
        let mut phases = self.0.lock().unwrap();
        let open = phases.last_mut().expect("an advance outside any phase");
        assert!(!open.finished, "an advance after {open:?} finished");
        open.advances.push(n);
    }

    fn finish(&self) {
        if let Some(open) = self.0.lock().unwrap().last_mut() {
            open.finished = true;
        }
    }
}

impl Recorder {
    /// Every phase finished with as many units done as announced (the count after each
    /// advance never passes the total); their names in order.
    fn complete(&self) -> Vec<String> {
        let phases = self.0.lock().unwrap().clone();
        for p in &phases {
            let mut done = 0;
            for a in &p.advances {
                done += a;
                assert!(done <= p.total, "{p:?} passes its total");
            }
            assert!(p.finished, "{p:?} never finished");
            assert_eq!(done, p.total, "{p:?}");
        }
        phases.iter().map(|p| p.name.clone()).collect()
    }

    fn total(&self, name: &str) -> u64 {
        let phases = self.0.lock().unwrap();
        phases.iter().find(|p| p.name == name).unwrap().total
    }
}

/// Fitting and solving report their phases through `Progress`, each with its total and
/// reaching it: the exact solver's assembly and factorisation, LiSSA's scale, Arnoldi's
/// Krylov steps, K-FAC's passes, and the solves (vectors, CG's vector-iterations,
/// LiSSA's vector-steps).
#[test]
fn fits_and_solves_report_their_phases() {
    use infl::curvature::phase;
    let cpu = CpuBackend::new();
    let c = case(12, 30, 5, 4, 3, Loss::CrossEntropy);
    let solvers = [
        (
            Solver::Exact,
            vec![phase::HESSIAN, phase::CHOLESKY, phase::SOLVE_EXACT],
        ),
        (Solver::cg(), vec![phase::SOLVE_CG]),
        (
            Solver::Lissa {
                depth: 50,
                scale: None,
                batch: None,
                repeats: 1,
                seed: 0,
            },
            vec![phase::LISSA_SCALE, phase::SOLVE_LISSA],
        ),
        (
            Solver::Arnoldi {
                dimension: 8,
                eigenpairs: 4,
                seed: 1,
            },
            vec![phase::ARNOLDI, phase::SOLVE_ARNOLDI],
        ),
    ];
    for (solver, expected) in solvers {
        let est = InfluenceFunction {
            solver,
            damping: Some(Damping::Value(0.1)),
            ..InfluenceFunction::default()
        };
        let rec = Recorder::default();
        est.prepare(&cpu, &c.run, &rec).unwrap();
        assert_eq!(rec.complete(), expected, "{solver:?}");
        let per_vector = match solver {
            Solver::Cg { max_iterations, .. } => max_iterations as u64,
            Solver::Lissa { depth, .. } => depth as u64,
            _ => 1,
        };
        assert_eq!(rec.total(expected[expected.len() - 1]), 5 * per_vector);
        // Self-influence solves every training example.
        let rec = Recorder::default();
        est.self_influence_with_progress(&cpu, &c.run, &rec)
            .unwrap();
        assert_eq!(rec.complete(), expected, "{solver:?}");
        assert_eq!(rec.total(expected[expected.len() - 1]), 30 * per_vector);
    }
    // The exact assembly: one GEMM per pair of outputs k <= l.
    let rec = Recorder::default();
    InfluenceFunction::default()
        .fit_curvature(&cpu, &c.run, &rec)
        .unwrap();
    assert_eq!(rec.complete(), [phase::HESSIAN]);
    assert_eq!(rec.total(phase::HESSIAN), 3 * 4 / 2);

    // K-FAC's passes over every layer of factor files.
    let root =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/captum_tracincp");
    let found = infl::io::FactorRun::discover(root.join("mlp/factors")).unwrap();
    let run = Run::from(infl::load_factor_run(&found, None, infl::Splits::TrainAndTest).unwrap());
    for (solver, fit) in [
        (Solver::Kfac, vec![phase::COVARIANCES, phase::EIGENVECTORS]),
        (
            Solver::Ekfac,
            vec![phase::COVARIANCES, phase::EIGENVECTORS, phase::EIGENVALUES],
        ),
    ] {
        let est = InfluenceFunction {
            solver,
            ..InfluenceFunction::default()
        };
        let rec = Recorder::default();
        est.prepare(&cpu, &run, &rec).unwrap();
        assert_eq!(rec.complete(), fit, "{solver:?}");
        // 40 training examples at each of 3 layers; two eigendecompositions per layer.
        assert_eq!(rec.total(phase::COVARIANCES), 3 * 40);
        assert_eq!(rec.total(phase::EIGENVECTORS), 2 * 3);
        let rec = Recorder::default();
        est.self_influence_with_progress(&cpu, &run, &rec).unwrap();
        let mut with_self = fit.clone();
        with_self.push(phase::PRECONDITION);
        assert_eq!(rec.complete(), with_self, "{solver:?}");
        assert_eq!(rec.total(phase::PRECONDITION), 40);
    }
}

thread_local! {
    /// A saved Hessian of a small case: its folder and bytes.
    static SAVED: (tempfile::TempDir, Vec<u8>) = {
        let c = case(11, 20, 2, 4, 3, Loss::CrossEntropy);
        let fitted = InfluenceFunction::default()
            .fit_curvature(&CpuBackend::new(), &c.run, &())
            .unwrap();
        let infl::curvature::SavedCurvature::Hessian(saved) = fitted else {
            panic!("features: not a Hessian")
        };
        let dir = tempfile::tempdir().unwrap();
        let (tensors, meta) = saved.tensors();
        let path = dir.path().join("h.safetensors");
        infl::io::write_safetensors(&path, tensors, meta).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(infl::curvature::SavedHessian::open(&path).unwrap().hessian, saved.hessian);
        (dir, bytes)
    };
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(common::fuzz_cases()))]

    /// Changed or cut bytes of a Hessian file: an error naming the file, or (a change that
    /// leaves every value and entry as it was, e.g. header padding) the same Hessian.
    #[test]
    fn altered_hessian_files_are_refused_naming_the_file(
        edits in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), 1u8..=255), 1..4),
        cut in proptest::prelude::any::<bool>(),
    ) {
        SAVED.with(|(dir, good)| {
            let mut bad = good.clone();
            for (at, xor) in &edits {
                let i = at.index(bad.len());
                bad[i] ^= xor;
            }
            if cut {
                bad.truncate(edits[0].0.index(good.len()));
            }
            let path = dir.path().join("bad.safetensors");
            std::fs::write(&path, &bad).unwrap();
            match infl::curvature::SavedHessian::open(&path) {
                Err(e) => assert!(e.to_string().contains("bad.safetensors"), "{e}"),
                Ok(h) => {
                    let original = infl::curvature::SavedHessian::open(dir.path().join("h.safetensors")).unwrap();
                    assert_eq!(h.hessian, original.hessian);
                }
            }
        });
    }
}
