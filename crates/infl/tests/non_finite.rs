//! The one rule for values f32 cannot hold: the engine refuses, before any kernel runs
//! (after it, for self-influence), with the same error on every backend, naming the
//! checkpoint, split and example; inputs that fit always give finite results.

use infl::{
    Backend, BackendChoice, Bias, CpuBackend, Engine, Error, FactorMatrices, FactorTerm, TermSet,
};
use infl_core::testing::rand_matrix;

fn set(scale_train_row: Option<(usize, f32)>, scale_test_row: Option<(usize, f32)>) -> TermSet {
    let scaled = |mut m: infl::Matrix, row: Option<(usize, f32)>| {
        if let Some((r, s)) = row {
            let cols = m.cols();
            let mut v = m.to_vec();
            v[r * cols..(r + 1) * cols].iter_mut().for_each(|x| *x *= s);
            m = infl::Matrix::from_vec(m.rows(), cols, v).unwrap();
        }
        m
    };
    TermSet {
        terms: (0..2u64)
            .map(|c| FactorTerm {
                label: format!("checkpoint c{c}"),
                weight: 0.5,
                bias: Bias::Included,
                positions: 1,
                train: FactorMatrices {
                    a: scaled(rand_matrix(30, 7, c), scale_train_row.filter(|_| c == 1)),
                    g: rand_matrix(30, 3, c + 10),
                },
                test: Some(FactorMatrices {
                    a: scaled(rand_matrix(5, 7, c + 20), scale_test_row),
                    g: rand_matrix(5, 3, c + 30),
                }),
            })
            .collect(),
    }
}

fn backends() -> Vec<Box<dyn Backend>> {
    let mut v: Vec<Box<dyn Backend>> = vec![Box::new(CpuBackend::new())];
    match infl::select_backend(BackendChoice::Gpu, None) {
        Ok(gpu) => v.push(gpu),
        Err(e) => {
            let required = std::env::var("INFL_REQUIRE_GPU").is_ok_and(|v| v == "1");
            assert!(!required, "INFL_REQUIRE_GPU=1 but no GPU: {e}");
            eprintln!("no GPU adapter ({e}): checking the CPU backend only");
        }
    }
    v
}

/// Every computation's error message on every backend (`Ok` as "ok").
fn outcomes(set: &TermSet) -> Vec<[String; 3]> {
    let show = |r: Result<(), Error>| r.map_or_else(|e| e.to_string(), |()| "ok".to_string());
    backends()
        .into_iter()
        .map(|b| {
            let e = Engine::new(b);
            [
                show(
                    e.scores(set, &())
                        .map(|s| assert!(s.iter().all(|x| x.is_finite()))),
                ),
                show(e.topk(set, 3, &()).map(drop)),
                show(
                    e.self_influence(set)
                        .map(|s| assert!(s.iter().all(|x| x.is_finite()))),
                ),
            ]
        })
        .collect()
}

#[test]
fn values_that_fit_give_finite_results() {
    for o in outcomes(&set(Some((4, 1e9)), Some((1, 1e9)))) {
        assert_eq!(o, ["ok", "ok", "ok"]);
    }
}

#[test]
fn a_training_row_too_large_is_named_alike_everywhere() {
    let all = outcomes(&set(Some((4, 1e19)), None));
    for o in &all {
        for m in o {
            assert!(
                m.starts_with("train example 4 at checkpoint c1: ‖a‖² = "),
                "{m}"
            );
        }
    }
    assert!(all.windows(2).all(|w| w[0] == w[1]), "{all:?}");
}

#[test]
fn a_test_row_too_large_is_named_for_scores_and_ignored_by_self_influence() {
    let all = outcomes(&set(None, Some((2, 1e19))));
    for o in &all {
        assert!(
            o[0].starts_with("test example 2 at checkpoint c0"),
            "{}",
            o[0]
        );
        assert_eq!(o[0], o[1]);
        assert_eq!(o[2], "ok");
    }
    assert!(all.windows(2).all(|w| w[0] == w[1]), "{all:?}");
}

#[test]
fn a_sum_over_checkpoints_too_large_is_refused() {
    // Each term fits; their weighted sum does not.
    let mut s = set(None, None);
    for t in &mut s.terms {
        t.weight = f32::MAX / 8.0;
    }
    for o in outcomes(&s) {
        for m in &o {
            assert!(m.contains("at all checkpoints"), "{m}");
        }
    }
}
