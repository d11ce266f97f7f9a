//! `infl demo` on a reduced setting (seconds): outputs exist, parse, forgetting events and
//! the default estimator find the mislabelled examples far better than chance, and every
//! registered estimator (the test-only toy included) has its row.

use std::path::Path;

use assert_cmd::Command;
use infl::estimators::REGISTRY;
use serde_json::Value;

fn has_font() -> bool {
    [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    ]
    .iter()
    .any(|p| Path::new(p).exists())
        || std::env::var_os("INFL_FONT").is_some()
}

#[test]
fn reduced_demo_finds_mislabelled_examples() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let assert = Command::cargo_bin("infl")
        .unwrap()
        .args([
            "demo",
            "--train",
            "2000",
            "--test",
            "200",
            "--epochs",
            "3",
            "--seed",
            "1",
            "--export-factors",
            "--out",
        ])
        .arg(&out)
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    assert!(stdout.contains("ROC AUC"), "{stdout}");

    let results: Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["n_train"], 2000);
    assert_eq!(results["n_mislabelled"], 200);
    assert_eq!(results["training"].as_array().unwrap().len(), 3);
    let methods = results["methods"].as_array().unwrap();
    // Forgetting events, every estimator, and the loss / margin / AUM baselines.
    assert_eq!(methods.len(), 1 + REGISTRY.len() + 4);
    let row = |name: &str| -> &Value {
        methods
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("no row {name:?} in {methods:?}"))
    };
    let names: Vec<String> = std::iter::once("forgetting events (TIDY)".to_string())
        .chain(
            REGISTRY
                .iter()
                .map(|r| format!("{} self-influence", r.label)),
        )
        .collect();
    for (m, name) in methods.iter().zip(&names) {
        assert_eq!(&m["name"], name.as_str(), "rows in registry order");
        assert!(stdout.contains(name.as_str()), "{name} not in {stdout}");
        let auc = m["roc_auc"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&auc), "{name}: ROC AUC {auc}");
        for k in ["5%", "10%", "20%"] {
            let f = m["found_after_inspecting"][k].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&f));
        }
        let f1 = m["flagged"]["f1"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&f1));
    }
    // Forgetting events, the default estimator and TracInCP over every layer (from the
    // factor files the demo exported) are far better than chance.
    for name in [
        "forgetting events (TIDY)",
        "TracInCPFast self-influence",
        "TracInCP self-influence",
        "loss (last checkpoint)",
        "loss (mean over checkpoints)",
        "margin (last checkpoint)",
        "AUM (margin, mean over checkpoints)",
    ] {
        let auc = row(name)["roc_auc"].as_f64().unwrap();
        assert!(auc > 0.8, "{name}: ROC AUC {auc} is not well above chance");
    }
    // Self-influence flags exactly noise x N examples, most of them mislabelled.
    let si = &row("TracInCPFast self-influence")["flagged"];
    assert_eq!(si["count"], 200);
    assert!(si["precision"].as_f64().unwrap() > 0.5, "{si}");
    // The default estimator keeps today's timing keys; the others get their own.
    let seconds = results["seconds"].as_object().unwrap();
    for k in ["load", "train", "self_influence", "topk", "plots", "total"] {
        assert!(seconds.contains_key(k), "{k} not in {seconds:?}");
    }
    for r in &REGISTRY[1..] {
        assert!(seconds.contains_key(&format!("self_influence:{}", r.name)));
    }
    let suspects = &results["top_suspects"];
    assert_eq!(suspects["self_influence"].as_array().unwrap().len(), 50);
    assert_eq!(results["explanations"].as_array().unwrap().len(), 4);

    // The run directory follows the convention and reloads with infl-io.
    for e in 1..=3 {
        for suffix in ["", ".train", ".test"] {
            assert!(
                out.join(format!("run/epoch-{e}{suffix}.safetensors"))
                    .is_file()
            );
        }
        for split in ["train", "test"] {
            let factors = out.join(format!("run/factors/epoch-{e}.{split}.safetensors"));
            let file = infl::io::FactorFile::open(&factors).unwrap();
            assert_eq!(file.layers().unwrap(), ["fc1", "fc2", "fc3"]);
        }
    }
    let history = std::fs::read(out.join("forgetting.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&history).unwrap();
    assert_eq!(st.tensor("ids").unwrap().shape(), &[2000]);
    assert_eq!(st.tensor("predicted").unwrap().shape(), &[3 * 2000]);

    if has_font() {
        for png in [
            "roc.png",
            "found.png",
            "suspects-self-influence.png",
            "suspects-forgetting.png",
            "explanations.png",
        ] {
            let bytes = std::fs::read(out.join(png)).unwrap_or_else(|e| panic!("{png}: {e}"));
            assert!(
                bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
                "{png} is not a PNG"
            );
        }
    }
    // No temporary file is left behind.
    for e in std::fs::read_dir(&out).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with(".infl-tmp"), "leftover {name}");
    }
}

#[test]
fn bad_options_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let a = Command::cargo_bin("infl")
        .unwrap()
        .args(["demo", "--noise", "1.5", "--out"])
        .arg(&out)
        .assert()
        .failure();
    assert!(String::from_utf8_lossy(&a.get_output().stderr).contains("--noise"));
    let a = Command::cargo_bin("infl")
        .unwrap()
        .args(["demo", "--mnist-dir"])
        .arg(dir.path())
        .arg("--out")
        .arg(&out)
        .assert()
        .failure();
    assert!(String::from_utf8_lossy(&a.get_output().stderr).contains("train-images-idx3-ubyte"));
    assert!(!out.join("results.json").exists());
}

#[test]
fn every_option_is_checked_before_the_output_folder_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let previous = out.join("run/epoch-1.safetensors");
    std::fs::create_dir_all(previous.parent().unwrap()).unwrap();
    std::fs::write(&previous, b"a previous run").unwrap();
    for (flag, value) in [
        ("--batch-size", "0"),
        ("--lr", "0"),
        ("--momentum", "1"),
        ("--weight-decay", "-1"),
        ("--train", "0"),
        ("--hidden", "16,0"),
    ] {
        let a = Command::cargo_bin("infl")
            .unwrap()
            .args(["demo", "--epochs", "1", &format!("{flag}={value}"), "--out"])
            .arg(&out)
            .assert()
            .failure();
        let stderr = String::from_utf8_lossy(&a.get_output().stderr).into_owned();
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
        assert!(
            previous.is_file(),
            "{flag} {value} deleted the previous run"
        );
    }
}
