//! `infl demo` on a reduced setting (seconds): outputs exist, parse, and both methods find
//! the mislabelled examples far better than chance.

use std::path::Path;

use assert_cmd::Command;

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
            "demo", "--train", "2000", "--test", "200", "--epochs", "3", "--seed", "1", "--out",
        ])
        .arg(&out)
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    assert!(
        stdout.contains("ROC AUC") && stdout.contains("TracInCPFast self-influence"),
        "{stdout}"
    );

    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["n_train"], 2000);
    assert_eq!(results["n_mislabelled"], 200);
    assert_eq!(results["training"].as_array().unwrap().len(), 3);
    let methods = results["methods"].as_array().unwrap();
    assert_eq!(methods.len(), 2);
    for m in methods {
        let auc = m["roc_auc"].as_f64().unwrap();
        assert!(
            auc > 0.8,
            "{}: ROC AUC {auc} is not well above chance",
            m["name"]
        );
        for k in ["5%", "10%", "20%"] {
            let f = m["found_after_inspecting"][k].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&f));
        }
        let f1 = m["flagged"]["f1"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&f1));
    }
    // Self-influence flags exactly noise x N examples, most of them mislabelled.
    let si = &methods[1]["flagged"];
    assert_eq!(si["count"], 200);
    assert!(si["precision"].as_f64().unwrap() > 0.5, "{si}");

    // The run directory follows the convention and reloads with infl-io.
    for e in 1..=3 {
        for suffix in ["", ".train", ".test"] {
            assert!(
                out.join(format!("run/epoch-{e}{suffix}.safetensors"))
                    .is_file()
            );
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
