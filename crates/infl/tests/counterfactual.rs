//! Counterfactual evaluation on a problem whose leave-one-out effects are known in closed
//! form: ridge regression (squared error, no bias), retrained exactly by solving its
//! normal equations in f64. There the exact influence function is the first-order
//! expansion of the true effect, so the harness must find LOO Pearson ≈ 1 and LDS ≈ 1 for
//! it and ≈ 0 for random scores. Also: resuming an interrupted run gives the same results
//! without redoing finished retrainings, results do not depend on the thread count, and a
//! cache folder of another configuration is refused untouched.

use std::sync::atomic::{AtomicUsize, Ordering};

use faer::{Mat, Side};
use infl::counterfactual::{
    Cache, Job, Outcome, Retrainer, Target, TrainSet, lds, lds_predictions, lds_subsets, loo,
    loo_effects, loo_removals, methods, retrain_all,
};
use infl::curvature::Damping;
use infl::{Bias, Checkpoint, CheckpointData, CpuBackend, Examples, Loss, Matrix, Options, Run};

const N: usize = 200;
const T: usize = 6;
const D: usize = 5;
const K: usize = 2;
const L2: f64 = 1e-2;

/// Deterministic pseudo-random values in [-1, 1).
fn noise(i: usize, salt: usize) -> f64 {
    let h = (i as u64 ^ (salt as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_mul(0xBF58_476D_1CE4_E5B9)
        .rotate_left(31)
        .wrapping_mul(0x94D0_49BB_1331_11EB);
    (h >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

struct Ridge {
    x: Vec<[f64; D]>,
    y: Vec<[f64; K]>,
    x_test: Vec<[f64; D]>,
    y_test: Vec<[f64; K]>,
    calls: AtomicUsize,
    /// Fail after this many calls (an interruption).
    fail_after: Option<usize>,
}

fn example(i: usize, salt: usize) -> ([f64; D], [f64; K]) {
    let x: [f64; D] = std::array::from_fn(|j| noise(i * D + j, salt));
    let y = std::array::from_fn(|k| {
        (0..D).map(|j| x[j] * ((j + k) as f64 - 2.0)).sum::<f64>()
            + 0.5 * noise(i * K + k, salt + 1)
    });
    (x, y)
}

impl Ridge {
    fn new(fail_after: Option<usize>) -> Self {
        let (x, y) = (0..N).map(|i| example(i, 1)).unzip();
        let (x_test, y_test) = (0..T).map(|i| example(i, 7)).unzip();
        Self {
            x,
            y,
            x_test,
            y_test,
            calls: AtomicUsize::new(0),
            fail_after,
        }
    }

    /// Minimises `Σ_i w_i ‖W x_i − y_i‖² + (λ/2)‖W‖²` exactly: `W (2 Σ w x xᵀ + λI) = 2 Σ w y xᵀ`.
    fn fit(&self, set: &TrainSet) -> [[f64; D]; K] {
        let mask = set.mask(N);
        let scale = match set {
            TrainSet::Subset(rows) => 1.0 / rows.len() as f64,
            _ => 1.0 / N as f64,
        };
        let mut a = Mat::<f64>::from_fn(D, D, |i, j| if i == j { L2 } else { 0.0 });
        let mut b = Mat::<f64>::zeros(D, K);
        for i in (0..N).filter(|&i| mask[i]) {
            for p in 0..D {
                for q in 0..D {
                    a[(p, q)] += 2.0 * scale * self.x[i][p] * self.x[i][q];
                }
                for k in 0..K {
                    b[(p, k)] += 2.0 * scale * self.y[i][k] * self.x[i][p];
                }
            }
        }
        use faer::linalg::solvers::Solve;
        let w = a.llt(Side::Lower).unwrap().solve(&b);
        std::array::from_fn(|k| std::array::from_fn(|p| w[(p, k)]))
    }

    fn run(&self) -> Run {
        let w = self.fit(&TrainSet::Full);
        let weight =
            Matrix::from_vec(K, D, w.iter().flatten().map(|&v| v as f32).collect()).unwrap();
        let split = |x: &[[f64; D]], y: &[[f64; K]]| Examples {
            source: Default::default(),
            features: Matrix::from_vec(x.len(), D, x.iter().flatten().map(|&v| v as f32).collect())
                .unwrap(),
            labels: None,
            targets: Some(
                Matrix::from_vec(y.len(), K, y.iter().flatten().map(|&v| v as f32).collect())
                    .unwrap(),
            ),
            ids: None,
        };
        Run::from(vec![CheckpointData {
            checkpoint: Checkpoint {
                name: "ridge".into(),
                source: Default::default(),
                learning_rate: Some(1.0),
                weight,
                bias: None,
            },
            train: split(&self.x, &self.y),
            test: Some(split(&self.x_test, &self.y_test)),
        }])
    }
}

impl Retrainer for Ridge {
    fn retrain(&self, set: &TrainSet, _seed: u64) -> infl::Result<Outcome> {
        let done = self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fail_after.is_some_and(|f| done >= f) {
            return Err(infl::Error::Config {
                what: "test".into(),
                details: "interrupted".into(),
            });
        }
        let w = self.fit(set);
        let loss = self
            .x_test
            .iter()
            .zip(&self.y_test)
            .map(|(x, y)| {
                (0..K)
                    .map(|k| ((0..D).map(|j| w[k][j] * x[j]).sum::<f64>() - y[k]).powi(2))
                    .sum()
            })
            .collect();
        Ok(Outcome {
            loss,
            margin: vec![0.0; T],
        })
    }
}

fn settings() -> methods::Settings {
    methods::Settings {
        options: Options {
            loss: Loss::MeanSquaredError,
            bias: Bias::Excluded,
            damping: Some(Damping::Value(L2)),
            ..Options::default()
        },
        lissa_depth: 100,
    }
}

fn scores(method: &str, run: &Run) -> Vec<f32> {
    methods::find(method)
        .unwrap()
        .scores(&settings(), &CpuBackend::default(), run, &())
        .unwrap()
}

fn jobs(sets: Vec<TrainSet>) -> Vec<Job> {
    sets.into_iter()
        .enumerate()
        .map(|(i, set)| Job {
            key: format!("job-{i:03}"),
            set,
            seed: 0,
        })
        .collect()
}

#[test]
fn the_exact_influence_function_recovers_ridge_leave_one_out_effects() {
    let ridge = Ridge::new(None);
    let run = ridge.run();
    let exact = scores("influence-exact", &run);
    let removals = loo_removals(&exact[..N], 20, 30, 3).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), &serde_json::json!({"case": "loo"}), T).unwrap();
    let mut sets = vec![TrainSet::Full];
    sets.extend(removals.iter().map(|&r| TrainSet::Without(r)));
    let outcomes = retrain_all(&ridge, &jobs(sets), &cache, &()).unwrap();
    let effects = loo_effects(&outcomes[0], &outcomes[1..], Target::Loss);
    let got = loo(&exact, N, &removals, &effects, 0);
    let summary = got.summary.unwrap();
    assert!(summary.mean > 0.99, "{got:?}");
    assert!(summary.low <= summary.mean && summary.mean <= summary.high);
    let random = loo(&scores("random", &run), N, &removals, &effects, 0);
    assert!(random.summary.unwrap().mean.abs() < 0.4, "{random:?}");
    // The predictions are score / N, of the same size as the effects (first order).
    let ratio = effects[0][0] / (f64::from(exact[removals[0]]) / N as f64);
    assert!((ratio - 1.0).abs() < 0.1, "{ratio}");
}

#[test]
fn lds_ranks_exact_influence_first_and_random_last() {
    let ridge = Ridge::new(None);
    let run = ridge.run();
    let subsets = lds_subsets(N, 30, 0.5, 11).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), &serde_json::json!({"case": "lds"}), T).unwrap();
    let sets = subsets.iter().cloned().map(TrainSet::Subset).collect();
    let outcomes = retrain_all(&ridge, &jobs(sets), &cache, &()).unwrap();
    let score = |m: &str| {
        let s = scores(m, &run);
        lds(
            &lds_predictions(&s, N, &subsets),
            &outcomes,
            Target::Loss,
            0,
        )
        .summary
        .unwrap()
        .mean
    };
    let (exact, cg, random) = (
        score("influence-exact"),
        score("influence-cg"),
        score("random"),
    );
    assert!(exact > 0.8, "{exact}");
    assert!((cg - exact).abs() < 0.02, "{cg} vs {exact}");
    assert!(random.abs() < 0.3 && random < exact - 0.5, "{random}");
}

#[test]
fn an_interrupted_run_resumes_to_the_same_results_and_threads_do_not_matter() {
    let subsets = lds_subsets(N, 12, 0.5, 5).unwrap();
    let all = jobs(subsets.into_iter().map(TrainSet::Subset).collect());
    let config = serde_json::json!({"case": "resume"});
    let fresh_dir = tempfile::tempdir().unwrap();
    let pool = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    };
    let fresh = pool(1).install(|| {
        let cache = Cache::open(fresh_dir.path(), &config, T).unwrap();
        retrain_all(&Ridge::new(None), &all, &cache, &()).unwrap()
    });
    let dir = tempfile::tempdir().unwrap();
    let interrupted = Ridge::new(Some(5));
    pool(3).install(|| {
        let cache = Cache::open(dir.path(), &config, T).unwrap();
        assert!(retrain_all(&interrupted, &all, &cache, &()).is_err());
    });
    let cached = std::fs::read_dir(dir.path()).unwrap().count() - 1;
    assert!((1..=5).contains(&cached), "{cached}");
    let resumed_model = Ridge::new(None);
    let resumed = pool(3).install(|| {
        let cache = Cache::open(dir.path(), &config, T).unwrap();
        retrain_all(&resumed_model, &all, &cache, &()).unwrap()
    });
    assert_eq!(resumed, fresh);
    assert_eq!(
        resumed_model.calls.load(Ordering::SeqCst),
        all.len() - cached
    );
}

#[test]
fn a_cache_of_another_configuration_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    Cache::open(
        dir.path(),
        &serde_json::json!({"fraction": 0.5, "subsets": 50}),
        T,
    )
    .unwrap();
    let before = std::fs::read(dir.path().join("config.json")).unwrap();
    let err = Cache::open(
        dir.path(),
        &serde_json::json!({"fraction": 0.3, "subsets": 50}),
        T,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("config.fraction") && err.contains("different configuration"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("config.json")).unwrap(),
        before
    );
    assert!(
        methods::find("nope")
            .unwrap_err()
            .to_string()
            .contains("influence-exact")
    );
}
