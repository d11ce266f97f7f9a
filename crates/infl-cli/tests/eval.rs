//! `infl eval` on a reduced setting (seconds: 4×4-pooled bundled MNIST, logistic
//! regression, a few retrainings): outputs parse, the influence function beats the random
//! baseline, a rerun resumes from the cache with identical results, and bad input is
//! refused with nothing overwritten.

use std::path::Path;

use assert_cmd::Command;
use safetensors::SafeTensors;
use serde_json::Value;

const SMALL: &[&str] = &["--train", "400", "--pool", "4", "--seed", "3", "--no-plots"];

fn eval(kind: &str, out: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    Command::cargo_bin("infl")
        .unwrap()
        .args(["-q", "eval", kind])
        .args(SMALL)
        .args(extra)
        .arg("--out")
        .arg(out)
        .assert()
}

fn method<'a>(json: &'a Value, name: &str) -> &'a Value {
    json["methods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {json}"))
}

fn mean(json: &Value, name: &str) -> f64 {
    method(json, name)["result"]["summary"]["mean"]
        .as_f64()
        .unwrap_or_else(|| panic!("no mean for {name}: {}", method(json, name)))
}

const LDS: &[&str] = &[
    "--test",
    "40",
    "--subsets",
    "12",
    "--methods",
    "influence-exact,influence-cg,grad-dot-last,random",
];

#[test]
fn reduced_lds_beats_random_and_resumes_identically() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("e");
    let stdout = eval("lds", &out, LDS).success().get_output().stdout.clone();
    assert!(String::from_utf8_lossy(&stdout).contains("IF exact"));
    let json: Value =
        serde_json::from_slice(&std::fs::read(out.join("lds.json")).unwrap()).unwrap();
    let (exact, cg, random) = (
        mean(&json, "influence-exact"),
        mean(&json, "influence-cg"),
        mean(&json, "random"),
    );
    assert!(
        exact > 0.5 && exact > random + 0.3,
        "exact {exact}, random {random}"
    );
    assert!((exact - cg).abs() < 0.05, "exact {exact}, cg {cg}");
    let summary = &method(&json, "influence-exact")["result"]["summary"];
    assert!(
        summary["low"].as_f64().unwrap() <= exact && exact <= summary["high"].as_f64().unwrap()
    );
    assert_eq!(summary["count"], 40);
    let bytes = std::fs::read(out.join("lds.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("subsets").unwrap().shape(), &[12, 200]);
    assert_eq!(st.tensor("loss").unwrap().shape(), &[12, 40]);
    // A second run reads every retraining from the cache and reports the same numbers.
    eval("lds", &out, LDS).success();
    let again: Value =
        serde_json::from_slice(&std::fs::read(out.join("lds.json")).unwrap()).unwrap();
    assert_eq!(again["methods"][0]["result"], json["methods"][0]["result"]);
    assert_eq!(std::fs::read(out.join("lds.safetensors")).unwrap(), bytes);
    // A cache of another configuration is refused, nothing overwritten.
    let config = std::fs::read(out.join("cache-lds/config.json")).unwrap();
    let err = eval("lds", &out, &["--test", "40", "--subsets", "13"]).failure();
    let stderr = String::from_utf8_lossy(&err.get_output().stderr).into_owned();
    assert!(stderr.contains("different configuration"), "{stderr}");
    assert_eq!(
        std::fs::read(out.join("cache-lds/config.json")).unwrap(),
        config
    );
    assert_eq!(std::fs::read(out.join("lds.safetensors")).unwrap(), bytes);
    // A damaged cached result is an error naming the file, not a silent retraining.
    let cached = out.join("cache-lds/lds-0003-s0.json");
    std::fs::write(&cached, b"{\"loss\": [1.0").unwrap();
    let err = eval("lds", &out, LDS).failure();
    let stderr = String::from_utf8_lossy(&err.get_output().stderr).into_owned();
    assert!(
        stderr.contains("lds-0003-s0.json") && stderr.contains("not a cached outcome"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(out.join("lds.safetensors")).unwrap(), bytes);
}

#[test]
fn reduced_loo_correlates_exact_influence_with_retraining() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("e");
    let args = [
        "--tests",
        "4",
        "--top",
        "6",
        "--random",
        "6",
        "--methods",
        "influence-exact,random",
    ];
    eval("loo", &out, &args).success();
    let json: Value =
        serde_json::from_slice(&std::fs::read(out.join("loo.json")).unwrap()).unwrap();
    let exact = mean(&json, "influence-exact");
    assert!(exact > 0.9, "{json}");
    assert_eq!(json["removals"].as_array().unwrap().len(), 12);
    let bytes = std::fs::read(out.join("loo.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("loss").unwrap().shape(), &[12, 4]);
}

/// The `[min, max]` of the training features `infl eval` wrote for its reference run.
fn feature_range(out: &Path, kind: &str) -> (f32, f32) {
    let bytes = std::fs::read(out.join(format!("run-{kind}/final.train.safetensors"))).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("features").unwrap();
    t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        })
}

#[test]
fn pixels_scaled_to_unit_are_the_models_inputs_and_key_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("e");
    let args = [
        "--tests",
        "2",
        "--top",
        "2",
        "--random",
        "1",
        "--methods",
        "random",
    ];
    eval("loo", &out, &args).success();
    let (lo, hi) = feature_range(&out, "loo");
    assert!(
        lo < -0.4 && hi > 2.0,
        "standardised by default: [{lo}, {hi}]"
    );
    // The standardised run's cache is refused for unit pixels, nothing overwritten.
    let config = std::fs::read(out.join("cache-loo/config.json")).unwrap();
    let unit: Vec<&str> = args.iter().copied().chain(["--pixels", "unit"]).collect();
    let err = eval("loo", &out, &unit).failure();
    let stderr = String::from_utf8_lossy(&err.get_output().stderr).into_owned();
    assert!(stderr.contains("different configuration"), "{stderr}");
    assert_eq!(
        std::fs::read(out.join("cache-loo/config.json")).unwrap(),
        config
    );
    let out = dir.path().join("unit");
    eval("loo", &out, &unit).success();
    let (lo, hi) = feature_range(&out, "loo");
    assert!(lo >= 0.0 && hi <= 1.0 && hi > 0.5, "unit: [{lo}, {hi}]");
    let json: Value =
        serde_json::from_slice(&std::fs::read(out.join("loo.json")).unwrap()).unwrap();
    assert_eq!(json["config"]["data"]["pixels"], "Unit");
}

#[test]
fn bad_eval_input_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never");
    for (args, expected) in [
        (&["--fraction", "1.5"][..], "(0, 1)"),
        (&["--fraction", "0"][..], "(0, 1)"),
        (&["--subsets", "1"][..], "M >= 2"),
        (
            &["--methods", "influence-exact,nope"][..],
            "unknown method \"nope\"",
        ),
        (&["--pool", "3"][..], "--pool"),
        (&["--pixels", "raw"][..], "--pixels"),
    ] {
        let err = eval("lds", &out, args).failure();
        let stderr = String::from_utf8_lossy(&err.get_output().stderr).into_owned();
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
    let err = eval("loo", &out, &["--top", "300", "--random", "300"]).failure();
    assert!(String::from_utf8_lossy(&err.get_output().stderr).contains("removals"));
    assert!(!out.exists());
}

/// dattri 0.3.0's own numbers on the fixture setting (`cargo xtask fixtures`:
/// fixtures/dattri/compare.py scored infl's checkpoints against infl's ground truth).
fn dattri(kind: &str, method: &str) -> f64 {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/dattri/small.json");
    let json: Value = serde_json::from_slice(&std::fs::read(root).unwrap()).unwrap();
    json["methods"][method][kind]["mean"].as_f64().unwrap()
}

#[test]
fn exact_influence_matches_dattri_on_the_fixture_setting() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("e");
    let setting = ["--train", "1000", "--pool", "2", "--no-plots", "--out"];
    let methods = "influence-exact,grad-dot-last,random";
    for kind in [
        &["lds", "--test", "100", "--subsets", "20"][..],
        &["loo", "--tests", "10"],
    ] {
        Command::cargo_bin("infl")
            .unwrap()
            .args(["-q", "eval"])
            .args(kind)
            .args(["--methods", methods])
            .args(setting)
            .arg(&out)
            .assert()
            .success();
    }
    let read = |f: &str| -> Value {
        serde_json::from_slice(&std::fs::read(out.join(f)).unwrap()).unwrap()
    };
    let (lds, loo) = (read("lds.json"), read("loo.json"));
    // Same checkpoints, same ground truth: dattri's explicit inverse and infl's exact
    // solver agree; TracIn on one checkpoint is the plain gradient dot product.
    let pairs = [
        (
            mean(&lds, "influence-exact"),
            dattri("lds", "influence-exact"),
            0.005,
        ),
        (mean(&lds, "grad-dot-last"), dattri("lds", "tracin"), 0.01),
        (
            mean(&loo, "influence-exact"),
            dattri("loo", "influence-exact"),
            0.005,
        ),
    ];
    for (infl, dattri, tolerance) in pairs {
        assert!(
            (infl - dattri).abs() < tolerance,
            "infl {infl} vs dattri {dattri}"
        );
    }
    assert!(mean(&lds, "random").abs() < 0.1);
    // The independent torch reference (its own Newton fits and exact influence, on infl's
    // subsets and removals, the bias penalised as infl's) scores the same.
    let reference = reference_small();
    let (ref_lds, ref_loo) = (
        reference["lds_mean"]["influence"].as_f64().unwrap(),
        reference["loo"]["influence"].as_f64().unwrap(),
    );
    assert!((mean(&lds, "influence-exact") - ref_lds).abs() < 0.005);
    assert!((mean(&loo, "influence-exact") - ref_loo).abs() < 0.005);
}

/// fixtures/dattri/lr_reference.py's results on the fixture setting (`cargo xtask
/// fixtures`), bias penalised as infl's model.
fn reference_small() -> Value {
    let root =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/dattri/reference-small.json");
    let json: Value = serde_json::from_slice(&std::fs::read(root).unwrap()).unwrap();
    json["variants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["bias"] == "penalised")
        .unwrap()
        .clone()
}

#[test]
fn the_reference_retrains_to_infls_ground_truth() {
    // Recorded by the reference against infl's `lds.safetensors` / `loo.safetensors`: the
    // same subsets and removals give the same losses (both converge to ‖∇f‖ ≤ 1e-12).
    let reference = reference_small();
    let lds = reference["lds_mean"]["max_abs_loss_vs_infl"]
        .as_f64()
        .unwrap();
    let loo = reference["loo"]["max_abs_effect_vs_infl"].as_f64().unwrap();
    assert!(lds < 1e-8 && loo < 1e-10, "{lds} {loo}");
}

#[test]
fn the_mlp_path_trains_checkpoints_and_averages_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("e");
    let args = [
        "--model",
        "mlp",
        "--hidden",
        "16",
        "--epochs",
        "3",
        "--batch-size",
        "32",
        "--lr",
        "0.05",
        "--test",
        "20",
        "--subsets",
        "4",
        "--seeds",
        "2",
        "--methods",
        "tracincp-fast,influence-exact,random",
    ];
    eval("lds", &out, &args).success();
    let json: Value =
        serde_json::from_slice(&std::fs::read(out.join("lds.json")).unwrap()).unwrap();
    for m in ["tracincp-fast", "influence-exact", "random"] {
        let s = &method(&json, m)["result"]["summary"];
        assert!(s["mean"].as_f64().unwrap().abs() <= 1.0, "{m}: {s}");
    }
    // One checkpoint per epoch; 4 subsets x 2 seeds cached.
    let run = std::fs::read_dir(out.join("run-lds")).unwrap().count();
    assert_eq!(run, 9);
    assert_eq!(
        std::fs::read_dir(out.join("cache-lds")).unwrap().count(),
        1 + 8
    );
}
