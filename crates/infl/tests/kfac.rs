//! K-FAC and EK-FAC against brute force in f64 written out here: the covariances, the
//! Kronecker product and the eigenbasis assembled densely, the damped inverse solved by
//! Cholesky, scores as dense dot products; a layer with a bias (ones column), one without,
//! one with several positions per example; a fit saved and read back (bit for bit, and
//! refused when it was fitted on anything else or altered); and the errors a user can meet.

mod common;

use faer::linalg::solvers::Solve;
use faer::{Mat, Side};
use infl::curvature::{Curvature, Damping, HessianOperator, SavedCurvature};
use infl::io::LayerFactors;
use infl::kfac::{Fit, FitIdentity, LayerFit, SavedFit, Strategy};
use infl::{Bias, Engine, Matrix, NamedFactors, SplitFactors, TermSet};

/// Deterministic values in [-1, 1) (xorshift), some rows scaled up so that the
/// covariances are not near the identity.
fn noise(seed: u64, rows: usize, cols: usize) -> Matrix {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    Matrix::from_fn(rows, cols, |i, _| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let x = (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
        (x * (1.0 + (i % 3) as f64)) as f32
    })
}

/// One linear layer's factors: `n` examples at `positions`, `d` inputs, `k` outputs.
struct Layer {
    name: &'static str,
    d: usize,
    k: usize,
    positions: usize,
    bias: Bias,
}

/// Two layers as the tests use them: one position with a bias, three without.
const LAYERS: [Layer; 2] = [
    Layer {
        name: "fc",
        d: 4,
        k: 3,
        positions: 1,
        bias: Bias::Included,
    },
    Layer {
        name: "conv",
        d: 3,
        k: 2,
        positions: 3,
        bias: Bias::Excluded,
    },
];

fn split(layers: &[Layer], n: usize, seed: u64) -> SplitFactors {
    SplitFactors {
        source: format!("split-{seed}.safetensors").into(),
        ids: (0..n as i64).collect(),
        labels: None,
        layers: (layers.iter().enumerate())
            .map(|(l, layer)| {
                let rows = n * layer.positions;
                let s = seed * 100 + l as u64 * 2;
                NamedFactors {
                    name: layer.name.into(),
                    factors: LayerFactors::Linear {
                        a: noise(s, rows, layer.d),
                        g: noise(s + 1, rows, layer.k),
                        positions: layer.positions,
                        bias: layer.bias,
                    },
                }
            })
            .collect(),
    }
}

/// `(ã, g, S)` of layer `l` as f64 rows.
fn rows(split: &SplitFactors, l: usize) -> (Vec<Vec<f64>>, Vec<Vec<f64>>, usize) {
    let LayerFactors::Linear {
        a,
        g,
        positions,
        bias,
    } = &split.layers[l].factors
    else {
        panic!("linear")
    };
    let f64s = |m: &Matrix, ones: bool| -> Vec<Vec<f64>> {
        (0..m.rows())
            .map(|i| {
                let mut r: Vec<f64> = m.view().row(i).iter().map(|&x| f64::from(x)).collect();
                if ones {
                    r.push(1.0);
                }
                r
            })
            .collect()
    };
    (f64s(a, *bias == Bias::Included), f64s(g, false), *positions)
}

/// `Σ rows rowsᵀ / count`.
fn covariance(rows: &[Vec<f64>]) -> Mat<f64> {
    let w = rows[0].len();
    Mat::from_fn(w, w, |i, j| {
        rows.iter().map(|r| r[i] * r[j]).sum::<f64>() / rows.len() as f64
    })
}

/// Per-example gradients `vec(Σ_s g_s ã_sᵀ)`, `[K, D']` row-major: `[N, K·D']`.
fn gradients(split: &SplitFactors, l: usize) -> Mat<f64> {
    let (a, g, s) = rows(split, l);
    let (w, k) = (a[0].len(), g[0].len());
    Mat::from_fn(a.len() / s, k * w, |i, c| {
        (i * s..(i + 1) * s)
            .map(|r| g[r][c / w] * a[r][c % w])
            .sum()
    })
}

/// `kron(x, y)[(i·p + j), (k·q + l)] = x[i, k] y[j, l]`.
fn kron(x: &Mat<f64>, y: &Mat<f64>) -> Mat<f64> {
    let (p, q) = (y.nrows(), y.ncols());
    Mat::from_fn(x.nrows() * p, x.ncols() * q, |r, c| {
        x[(r / p, c / q)] * y[(r % p, c % q)]
    })
}

/// Rows of `b` times `(h + λI)⁻¹`, by Cholesky.
fn solve(h: &Mat<f64>, damping: f64, b: &Mat<f64>) -> Mat<f64> {
    let mut h = h.clone();
    for i in 0..h.nrows() {
        h[(i, i)] += damping;
    }
    let x = h
        .llt(Side::Lower)
        .expect("positive definite")
        .solve(b.transpose().to_owned());
    x.transpose().to_owned()
}

/// `max |x − y| / max |y|`.
fn relative(x: &Mat<f64>, y: &Mat<f64>) -> f64 {
    assert_eq!((x.nrows(), x.ncols()), (y.nrows(), y.ncols()));
    let (mut err, mut scale) = (0f64, 0f64);
    for i in 0..y.nrows() {
        for j in 0..y.ncols() {
            err = err.max((x[(i, j)] - y[(i, j)]).abs());
            scale = scale.max(y[(i, j)].abs());
        }
    }
    err / scale
}

/// The dense preconditioner of a fitted layer: `Q diag(1/(Λ + λ)) Qᵀ`, `Q = Q_S ⊗ Q_A`.
fn dense_inverse(layer: &LayerFit, damping: f64) -> Mat<f64> {
    let q = kron(
        &layer.gradient_eigenvectors().to_owned(),
        &layer.activation_eigenvectors().to_owned(),
    );
    let w = layer.width();
    let lambda = layer.eigenvalues();
    let scaled = Mat::from_fn(q.nrows(), q.ncols(), |r, c| {
        q[(r, c)] / (lambda[(c / w, c % w)] + damping)
    });
    &scaled * q.transpose()
}

#[test]
fn kfac_curvature_is_the_kronecker_product_of_the_covariances() {
    let train = split(&LAYERS, 30, 1);
    let fit = Fit::new(&train, Strategy::Kfac, &()).unwrap();
    for (l, layer) in fit.layers().iter().enumerate() {
        // Covariances over the N·S rows, the gradient's first: S ⊗ A in the [K, D'] layout.
        let (a, g, _) = rows(&train, l);
        let dense = kron(&covariance(&g), &covariance(&a));
        let err = relative(&layer.assemble(&()).unwrap(), &dense);
        assert!(err < 1e-12, "{}: {err:e}", layer.name());
        let trace: f64 = (0..dense.nrows()).map(|i| dense[(i, i)]).sum();
        assert!((layer.trace().unwrap() - trace).abs() < 1e-12 * trace);
    }
}

#[test]
fn kfac_preconditions_by_the_damped_inverse_of_the_kronecker_product() {
    let (train, test) = (split(&LAYERS, 30, 1), split(&LAYERS, 5, 2));
    let fit = Fit::new(&train, Strategy::Kfac, &()).unwrap();
    for damping in [1e-3, 0.5] {
        let x = fit.precondition(&test, Damping::Value(damping)).unwrap();
        for (l, layer) in fit.layers().iter().enumerate() {
            let (a, g, _) = rows(&train, l);
            let dense = kron(&covariance(&g), &covariance(&a));
            let want = solve(&dense, damping, &gradients(&test, l));
            let err = relative(&x[l], &want);
            assert!(err < 1e-9, "{} at {damping}: {err:e}", layer.name());
        }
    }
}

#[test]
fn ekfac_eigenvalues_are_the_mean_squared_projected_gradients() {
    let train = split(&LAYERS, 30, 3);
    let fit = Fit::new(&train, Strategy::Ekfac, &()).unwrap();
    for (l, layer) in fit.layers().iter().enumerate() {
        let grads = gradients(&train, l);
        let (qs, qa) = (
            layer.gradient_eigenvectors(),
            layer.activation_eigenvectors(),
        );
        let (k, w) = (layer.outputs(), layer.width());
        let mut want = Mat::<f64>::zeros(k, w);
        for i in 0..grads.nrows() {
            let gi = Mat::from_fn(k, w, |r, c| grads[(i, r * w + c)]);
            let p = qs.transpose() * &gi * qa;
            for r in 0..k {
                for c in 0..w {
                    want[(r, c)] += p[(r, c)].powi(2) / grads.nrows() as f64;
                }
            }
        }
        let err = relative(&layer.eigenvalues().to_owned(), &want);
        assert!(err < 1e-12, "{}: {err:e}", layer.name());
        // Same eigenbasis as K-FAC: the covariances' eigenvectors diagonalise them.
        let (a, _, _) = rows(&train, l);
        let d = qa.transpose() * covariance(&a) * qa;
        let off: f64 = (0..w)
            .flat_map(|i| (0..w).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| d[(i, j)].abs())
            .fold(0.0, f64::max);
        assert!(off < 1e-12, "{}: off-diagonal {off:e}", layer.name());
    }
}

#[test]
fn ekfac_preconditions_by_the_eigenbasis_with_its_eigenvalues() {
    let (train, test) = (split(&LAYERS, 30, 4), split(&LAYERS, 5, 5));
    let fit = Fit::new(&train, Strategy::Ekfac, &()).unwrap();
    let x = fit.precondition(&test, Damping::Value(1e-2)).unwrap();
    for (l, layer) in fit.layers().iter().enumerate() {
        let want = gradients(&test, l) * dense_inverse(layer, 1e-2);
        let err = relative(&x[l], &want);
        assert!(err < 1e-9, "{}: {err:e}", layer.name());
        // ... which is the inverse of the layer's curvature plus λ.
        let inverse = solve(&layer.assemble(&()).unwrap(), 1e-2, &gradients(&test, l));
        assert!(relative(&x[l], &inverse) < 1e-9);
    }
}

#[test]
fn scores_through_the_engine_are_the_dense_formula() {
    let (train, test) = (split(&LAYERS, 40, 6), split(&LAYERS, 7, 7));
    for strategy in [Strategy::Kfac, Strategy::Ekfac] {
        let fit = Fit::new(&train, strategy, &()).unwrap();
        let x = fit.precondition(&test, Damping::Value(1e-3)).unwrap();
        let terms = fit.terms(&train, &x, "checkpoint c").unwrap();
        // fc: 3 outputs + bias; conv: one materialised term.
        assert_eq!(terms.len(), 3 + 1 + 1);
        let got = Engine::default().scores(&TermSet { terms }, &()).unwrap();
        let mut want = Mat::<f64>::zeros(7, 40);
        for (l, layer) in fit.layers().iter().enumerate() {
            let query = gradients(&test, l) * dense_inverse(layer, 1e-3);
            want += query * gradients(&train, l).transpose();
        }
        let got = Mat::from_fn(7, 40, |q, i| f64::from(got[q * 40 + i]));
        let err = relative(&got, &want);
        assert!(err < 1e-5, "{strategy:?}: {err:e}");
    }
}

#[test]
fn the_heuristic_damping_is_a_tenth_of_the_mean_eigenvalue_per_layer() {
    let (train, test) = (split(&LAYERS, 30, 8), split(&LAYERS, 4, 9));
    for strategy in [Strategy::Kfac, Strategy::Ekfac] {
        let fit = Fit::new(&train, strategy, &()).unwrap();
        let heuristic = fit.precondition(&test, Damping::Heuristic).unwrap();
        for (l, layer) in fit.layers().iter().enumerate() {
            let lambda = layer.eigenvalues();
            let mean = (0..lambda.nrows())
                .flat_map(|r| (0..lambda.ncols()).map(move |c| lambda[(r, c)]))
                .sum::<f64>()
                / (lambda.nrows() * lambda.ncols()) as f64;
            let value = layer.damping(Damping::Heuristic).unwrap();
            assert!(
                (value - 0.1 * mean).abs() <= 1e-14 * mean,
                "{value} vs {mean}"
            );
            let fixed = fit.precondition(&test, Damping::Value(0.1 * mean)).unwrap();
            assert!(relative(&heuristic[l], &fixed[l]) < 1e-12);
        }
        let (first, second) = (
            fit.layers()[0].damping(Damping::Heuristic).unwrap(),
            fit.layers()[1].damping(Damping::Heuristic).unwrap(),
        );
        assert!(
            (first - second).abs() > 1e-6 * first,
            "per layer, not global"
        );
    }
}

#[test]
fn a_dense_gradient_is_refused_naming_the_parameter() {
    let mut train = split(&LAYERS[..1], 10, 10);
    train.layers.push(NamedFactors {
        name: "norm.weight".into(),
        factors: LayerFactors::Dense {
            grad: noise(3, 10, 6),
        },
    });
    let e = Fit::new(&train, Strategy::Ekfac, &())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("split-10.safetensors") && e.contains("norm.weight.grad"),
        "{e}"
    );
    assert!(e.contains("no Kronecker structure"), "{e}");
}

#[test]
fn test_factors_of_other_layers_or_shapes_are_refused() {
    let train = split(&LAYERS, 10, 11);
    let fit = Fit::new(&train, Strategy::Kfac, &()).unwrap();
    let fewer = split(&LAYERS[..1], 3, 12);
    let e = fit
        .precondition(&fewer, Damping::Value(1e-3))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("split-12.safetensors") && e.contains("[\"fc\", \"conv\"]"),
        "{e}"
    );
    let other = [
        Layer {
            bias: Bias::Excluded,
            ..LAYERS[0]
        },
        Layer { ..LAYERS[1] },
    ];
    let e = fit
        .precondition(&split(&other, 3, 13), Damping::Value(1e-3))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("layer `fc`") && e.contains("bias included"),
        "{e}"
    );
    // Preconditioned blocks that do not fit the layers.
    let x = fit
        .precondition(&split(&LAYERS, 3, 14), Damping::Value(1e-3))
        .unwrap();
    let e = fit.terms(&train, &x[..1], "c").unwrap_err().to_string();
    assert!(e.contains("one block of test rows per layer"), "{e}");
}

#[test]
fn a_damping_that_leaves_an_eigenvalue_non_positive_is_refused() {
    // A layer whose output gradients are all zero (a dead layer): S = 0, and so is Λ.
    let mut train = split(&LAYERS[..1], 20, 15);
    let LayerFactors::Linear { g, .. } = &mut train.layers[0].factors else {
        unreachable!()
    };
    *g = Matrix::from_fn(g.rows(), g.cols(), |_, _| 0.0);
    let test = split(&LAYERS[..1], 2, 16);
    for strategy in [Strategy::Kfac, Strategy::Ekfac] {
        let fit = Fit::new(&train, strategy, &()).unwrap();
        for (damping, says) in [
            (0.0, "raise the damping"),
            (-1.0, "non-negative"),
            (f64::NAN, "non-negative"),
        ] {
            let e = fit
                .precondition(&test, Damping::Value(damping))
                .unwrap_err()
                .to_string();
            assert!(e.contains("layer fc") && e.contains(says), "{damping}: {e}");
        }
        let e = fit
            .precondition(&test, Damping::Heuristic)
            .unwrap_err()
            .to_string();
        assert!(e.contains("raise the damping"), "{e}");
        assert!(fit.precondition(&test, Damping::Value(1e-6)).is_ok());
    }
}

/// A fit written as `infl fit` writes it and read back.
fn saved(train: &SplitFactors, strategy: Strategy, dir: &std::path::Path) -> std::path::PathBuf {
    let identity = FitIdentity::of(train, "ckpt-2", strategy, Curvature::Fisher).unwrap();
    let fit = Fit::new(train, strategy, &()).unwrap();
    let saved = SavedFit {
        fit,
        identity,
        source: Default::default(),
    };
    let (tensors, meta) = SavedCurvature::Kfac(saved.into()).tensors();
    let path = dir.join(format!("{}.safetensors", strategy.short_name()));
    infl::io::write_safetensors(&path, tensors, meta).unwrap();
    path
}

fn bits(m: faer::MatRef<'_, f64>) -> Vec<u64> {
    (0..m.nrows())
        .flat_map(|i| (0..m.ncols()).map(move |j| m[(i, j)].to_bits()))
        .collect()
}

#[test]
fn a_saved_fit_preconditions_bit_for_bit_as_the_fit() {
    let dir = tempfile::tempdir().unwrap();
    let (train, test) = (split(&LAYERS, 30, 1), split(&LAYERS, 5, 2));
    for strategy in [Strategy::Kfac, Strategy::Ekfac] {
        let path = saved(&train, strategy, dir.path());
        let fresh = Fit::new(&train, strategy, &()).unwrap();
        let SavedCurvature::Kfac(read) = SavedCurvature::open(&path).unwrap() else {
            panic!("{}: not a K-FAC fit", path.display())
        };
        assert_eq!(read.fit.strategy(), strategy);
        for (a, b) in fresh.layers().iter().zip(read.fit.layers()) {
            assert_eq!(a.name(), b.name());
            assert_eq!(bits(a.eigenvalues()), bits(b.eigenvalues()), "{strategy:?}");
            assert_eq!(
                bits(a.activation_eigenvectors()),
                bits(b.activation_eigenvectors())
            );
            assert_eq!(
                bits(a.gradient_eigenvectors()),
                bits(b.gradient_eigenvectors())
            );
            // The heuristic damping comes from the same Λ.
            let (x, y) = (Damping::Heuristic.value(a), Damping::Heuristic.value(b));
            assert_eq!(x.unwrap().to_bits(), y.unwrap().to_bits());
        }
        for damping in [Damping::Heuristic, Damping::Value(1e-3)] {
            let (x, y) = (
                fresh.precondition(&test, damping).unwrap(),
                read.fit.precondition(&test, damping).unwrap(),
            );
            for (x, y) in x.iter().zip(&y) {
                assert_eq!(
                    bits(x.as_ref()),
                    bits(y.as_ref()),
                    "{strategy:?} {damping:?}"
                );
            }
        }
    }
}

#[test]
fn a_saved_fit_of_anything_else_is_refused_naming_the_first_field_that_differs() {
    let dir = tempfile::tempdir().unwrap();
    let train = split(&LAYERS, 30, 1);
    let path = saved(&train, Strategy::Ekfac, dir.path());
    let read = SavedFit::open(&path).unwrap();
    let same = FitIdentity::of(&train, "ckpt-2", Strategy::Ekfac, Curvature::Fisher).unwrap();
    read.check(&train.source, &same).unwrap();
    let wider = [Layer { d: 5, ..LAYERS[0] }, Layer { ..LAYERS[1] }];
    let identity = |split: &SplitFactors| {
        FitIdentity::of(split, "ckpt-2", Strategy::Ekfac, Curvature::Fisher).unwrap()
    };
    let cases: Vec<(FitIdentity, &str, &str)> = vec![
        (
            FitIdentity {
                strategy: Strategy::Kfac,
                ..same.clone()
            },
            "strategy = ekfac",
            "has kfac",
        ),
        (
            FitIdentity {
                curvature: Curvature::TrueFisher,
                ..same.clone()
            },
            "curvature = fisher",
            "has true-fisher",
        ),
        (
            FitIdentity {
                checkpoint: "ckpt-1".into(),
                ..same.clone()
            },
            "checkpoint = ckpt-2",
            "has ckpt-1",
        ),
        (
            identity(&split(&LAYERS[..1], 30, 1)),
            "layers = [\"fc\",\"conv\"]",
            "has [\"fc\"]",
        ),
        (
            identity(&split(&wider, 30, 1)),
            "fc.shape = outputs=3 inputs=4 positions=1 bias=included",
            "has outputs=3 inputs=5",
        ),
        (identity(&split(&LAYERS, 31, 1)), "examples = 30", "has 31"),
        (
            identity(&split(&LAYERS, 30, 3)),
            "crc32 = ",
            "refit with `infl fit`",
        ),
    ];
    for (want, field, other) in cases {
        let e = read.check(&train.source, &want).unwrap_err().to_string();
        assert!(
            e.contains(field) && e.contains(other) && e.contains("ekfac.safetensors"),
            "{field}: {e}"
        );
    }
}

#[test]
fn an_altered_or_foreign_fit_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let train = split(&LAYERS, 30, 1);
    let path = saved(&train, Strategy::Kfac, dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 3; // inside the last tensor's data
    bytes[last] ^= 0x10;
    let altered = dir.path().join("altered.safetensors");
    std::fs::write(&altered, &bytes).unwrap();
    let e = SavedCurvature::open(&altered).unwrap_err().to_string();
    assert!(
        e.contains("altered.safetensors") && e.contains("altered or damaged"),
        "{e}"
    );
    // Another format (a factor file) is named with both formats.
    let foreign = dir.path().join("foreign.safetensors");
    let one = infl::io::OutTensor::F64(vec![1], vec![1.0]);
    let meta = [("format".to_string(), "infl index v1".to_string())].into();
    infl::io::write_safetensors(&foreign, vec![("x".into(), one)], meta).unwrap();
    let e = SavedCurvature::open(&foreign).unwrap_err().to_string();
    assert!(
        e.contains("\"infl index v1\"")
            && e.contains("\"infl hessian v1\"")
            && e.contains("\"infl kfac v1\""),
        "{e}"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(common::fuzz_cases()))]

    /// Changed or cut bytes of a K-FAC fit file: an error naming the file, or (a change
    /// that leaves every value and entry as it was, e.g. header padding or an identity
    /// field, which the run's check refuses) the same fit.
    #[test]
    fn altered_fit_files_are_refused_naming_the_file(
        edits in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), 1u8..=255), 1..4),
        cut in proptest::prelude::any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let good = std::fs::read(saved(&split(&LAYERS, 12, 4), Strategy::Ekfac, dir.path())).unwrap();
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
        match SavedCurvature::open(&path) {
            Err(e) => assert!(e.to_string().contains("bad.safetensors"), "{e}"),
            Ok(SavedCurvature::Kfac(read)) => {
                let original = SavedFit::open(dir.path().join("ekfac.safetensors")).unwrap();
                for (a, b) in read.fit.layers().iter().zip(original.fit.layers()) {
                    assert_eq!(bits(a.eigenvalues()), bits(b.eigenvalues()));
                    assert_eq!(bits(a.activation_eigenvectors()), bits(b.activation_eigenvectors()));
                    assert_eq!(bits(a.gradient_eigenvectors()), bits(b.gradient_eigenvectors()));
                }
            }
            Ok(other) => panic!("read as {}", other.format()),
        }
    }
}
