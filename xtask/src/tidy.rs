//! Tidy tests: crate layering (from `cargo metadata`) and `//!` docs on every file.

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::Value;

    /// Library crates in layer order: each may depend only on crates before it.
    const LAYERS: &[&str] = &[
        "infl-core",
        "infl-io",
        "infl-cpu",
        "infl-wgpu",
        "infl-nn",
        "infl",
        "infl-cli",
        "infl-py",
    ];

    fn metadata() -> Value {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = std::process::Command::new(cargo)
            .args([
                "metadata",
                "--format-version",
                "1",
                "--no-deps",
                "--offline",
            ])
            .current_dir(crate::root())
            .output()
            .expect("cargo metadata runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("metadata is JSON")
    }

    #[test]
    fn crates_depend_only_on_layers_above() {
        let meta = metadata();
        let packages = meta["packages"].as_array().expect("packages");
        let mut seen = 0;
        for p in packages {
            let name = p["name"].as_str().expect("name");
            let Some(level) = LAYERS.iter().position(|l| *l == name) else {
                // xtask and benches may use anything, but must be known.
                assert!(
                    ["xtask", "infl-benches"].contains(&name),
                    "unknown workspace crate {name}: add it to LAYERS"
                );
                continue;
            };
            seen += 1;
            // Folder name = crate name.
            let manifest = p["manifest_path"].as_str().expect("manifest");
            let folder = Path::new(manifest)
                .parent()
                .and_then(|d| d.file_name())
                .and_then(|f| f.to_str())
                .expect("folder");
            assert_eq!(folder, name, "crate {name} lives in folder {folder}");
            for dep in p["dependencies"].as_array().expect("deps") {
                let dep_name = dep["name"].as_str().expect("dep name");
                if let Some(dl) = LAYERS.iter().position(|l| *l == dep_name) {
                    let dev = dep["kind"].as_str() == Some("dev");
                    assert!(
                        dl < level || (dev && dl == level),
                        "{name} (layer {level}) depends on {dep_name} (layer {dl}): \
                         crates may only depend on crates above them"
                    );
                }
            }
        }
        assert!(seen >= 5, "found only {seen} layered crates");
    }

    fn rs_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n == "target") {
                    continue;
                }
                rs_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    #[test]
    fn every_rust_file_starts_with_a_module_doc() {
        let root = crate::root();
        let mut files = Vec::new();
        for d in ["crates", "xtask", "benches"] {
            rs_files(&root.join(d), &mut files);
        }
        assert!(files.len() > 10, "found only {} files", files.len());
        let bad: Vec<_> = files
            .iter()
            .filter(|f| {
                let text = std::fs::read_to_string(f).unwrap_or_default();
                !text.trim_start().starts_with("//!")
            })
            .collect();
        assert!(bad.is_empty(), "files without a leading `//!` doc: {bad:?}");
    }
}
