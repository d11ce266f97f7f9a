//! Golden tests: influence functions on the final layer match Captum's
//! `NaiveInfluenceFunction` (float64, summed Hessian, `hessian_reg` = our damping) recorded in
//! `fixtures/captum_influence` by `cargo xtask fixtures` (see its generate.py), with the
//! bias a parameter and fixed, for both solvers, on the CPU and the GPU.

use infl::curvature::{Damping, Solver};
use infl::estimators::Convention;
use infl::io::{Rank, RunLayout, TensorFile};
use infl::{Backend, Bias, CpuBackend, Estimator, InfluenceFunction, Run, Splits, load_run};

mod common;

use common::assert_close_to_peer as assert_close;

fn check(backend: &dyn Backend, bias: Bias, solver: Solver) {
    let tag = if bias == Bias::Included {
        "bias"
    } else {
        "nobias"
    };
    let layout = RunLayout::discover(common::fixtures("captum").join("run")).unwrap();
    let run = Run::from(load_run(&layout, "fc3", Splits::TrainAndTest).unwrap());
    let expected = TensorFile::open(
        common::fixtures("captum_influence").join(format!("expected_{tag}.safetensors")),
    )
    .unwrap();
    let meta = expected.metadata();
    let est = InfluenceFunction {
        bias,
        solver,
        convention: Convention::Captum,
        damping: Some(Damping::Value(meta["damping"].parse().unwrap())),
        ..InfluenceFunction::default()
    };
    let what = format!("{tag} {solver:?} on {}", backend.name());
    let scores = est.scores(backend, &run, &()).unwrap();
    assert_eq!(
        scores.prepared.checkpoints,
        vec![meta["checkpoint"].clone()]
    );
    let want = expected.matrix("scores", Rank::Matrix).unwrap();
    assert_close(&format!("{what} scores"), &scores.values, want.data());
    let got = est.self_influence(backend, &run).unwrap().values;
    assert_close(
        &format!("{what} self-influence"),
        &got,
        &expected.vector("self_influence").unwrap(),
    );
}

#[test]
fn matches_captum_naive_influence_function_on_the_cpu() {
    let cpu = CpuBackend::new();
    for bias in [Bias::Included, Bias::Excluded] {
        let cg = |tolerance| Solver::Cg {
            tolerance,
            max_iterations: 1000,
        };
        for solver in [Solver::Exact, cg(1e-8), cg(1e-10)] {
            check(&cpu, bias, solver);
        }
    }
}

#[test]
fn matches_captum_naive_influence_function_on_the_gpu() {
    let Some(gpu) = common::gpu() else { return };
    for bias in [Bias::Included, Bias::Excluded] {
        check(&*gpu, bias, Solver::Exact);
    }
}
