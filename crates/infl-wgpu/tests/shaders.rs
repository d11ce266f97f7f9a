//! Shader checks that need no GPU: every shader parses and validates with naga, and
//! every file in `shaders/` is in the `include_str!` table.

use std::collections::BTreeSet;
use std::path::Path;

use infl_wgpu::source::Shader;

#[test]
fn every_shader_parses_and_validates() {
    for s in Shader::ALL {
        let module = naga::front::wgsl::parse_str(s.source())
            .unwrap_or_else(|e| panic!("{}: {}", s.file_name(), e.emit_to_string(s.source())));
        let mut v = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::empty(),
        );
        v.validate(&module)
            .unwrap_or_else(|e| panic!("{}: {}", s.file_name(), e.emit_to_string(s.source())));
        assert_eq!(
            module.entry_points.len(),
            1,
            "{}: one entry point `main`",
            s.file_name()
        );
        assert_eq!(module.entry_points[0].name, "main");
        assert!(
            !module.overrides.is_empty(),
            "{}: tile/workgroup sizes must be override constants",
            s.file_name()
        );
    }
}

#[test]
fn every_shader_file_is_in_the_table() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shaders");
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".wgsl"))
        .collect();
    let table: BTreeSet<String> = Shader::ALL
        .iter()
        .map(|s| s.file_name().to_string())
        .collect();
    assert_eq!(on_disk, table, "shaders/ and source::Shader::ALL differ");
    for s in Shader::ALL {
        let text = std::fs::read_to_string(dir.join(s.file_name())).expect("read shader");
        assert_eq!(text, s.source(), "{} is stale", s.file_name());
    }
}
