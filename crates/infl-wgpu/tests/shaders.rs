//! Shader checks that need no GPU: every shader parses and validates with naga, every
//! file in `shaders/` is in the `include_str!` table, and the host's `#[repr(C)]` parameter
//! structs match the WGSL structs they mirror (size and every field's name and offset, as
//! laid out by naga).

use std::collections::BTreeSet;
use std::mem::{offset_of, size_of};
use std::path::Path;

use infl_wgpu::kernels::{
    FusedScoresParams, GemmParams, SelfInfluenceParams, TermDesc, TopkRowsParams,
};
use infl_wgpu::source::Shader;
use naga::proc::Layouter;

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

/// A struct's size and its fields' names and byte offsets.
#[derive(Debug, PartialEq, Eq)]
struct Layout {
    size: usize,
    fields: Vec<(String, usize)>,
}

/// The [`Layout`] of a Rust struct, from the fields listed (all of them, in order).
macro_rules! rust_layout {
    ($t:ty { $($field:ident),* $(,)? }) => {
        Layout {
            size: size_of::<$t>(),
            fields: vec![$((stringify!($field).to_string(), offset_of!($t, $field))),*],
        }
    };
}

/// The host's mirror of each shader's uniform parameters, and whether the shader reads a
/// `TermDesc` table. An exhaustive match, so a new shader must be added here.
fn host_side(shader: Shader) -> (Layout, bool) {
    match shader {
        Shader::FusedScores => (
            rust_layout!(FusedScoresParams {
                q_rows,
                t_rows,
                n_terms,
                ld_out
            }),
            true,
        ),
        Shader::TopkRows => (
            rust_layout!(TopkRowsParams {
                rows,
                cols,
                ld,
                k,
                row0,
                _pad0,
                _pad1,
                _pad2
            }),
            false,
        ),
        Shader::SelfInfluence => (
            rust_layout!(SelfInfluenceParams {
                rows,
                n_terms,
                row0,
                _pad
            }),
            true,
        ),
        Shader::Gemm => (
            rust_layout!(GemmParams {
                m,
                n,
                k,
                b_trans,
                ld_out,
                ld_b,
                _pad0,
                _pad1
            }),
            false,
        ),
    }
}

/// The layout naga gives the struct type `ty`, checked against the layouter's size.
fn naga_layout(module: &naga::Module, layouter: &Layouter, ty: naga::Handle<naga::Type>) -> Layout {
    let naga::TypeInner::Struct { members, span } = &module.types[ty].inner else {
        panic!("{:?} is not a struct", module.types[ty].name);
    };
    assert_eq!(layouter[ty].size, *span, "naga's span and layout disagree");
    Layout {
        size: *span as usize,
        fields: members
            .iter()
            .map(|m| (m.name.clone().unwrap_or_default(), m.offset as usize))
            .collect(),
    }
}

fn parse(shader: Shader) -> (naga::Module, Layouter) {
    let module = naga::front::wgsl::parse_str(shader.source()).unwrap_or_else(|e| {
        panic!(
            "{}: {}",
            shader.file_name(),
            e.emit_to_string(shader.source())
        )
    });
    let mut layouter = Layouter::default();
    layouter
        .update(module.to_ctx())
        .unwrap_or_else(|e| panic!("{}: layout: {e}", shader.file_name()));
    (module, layouter)
}

#[test]
fn parameter_structs_match_the_wgsl_uniforms() {
    for shader in Shader::ALL {
        let (module, layouter) = parse(shader);
        let uniforms: Vec<_> = module
            .global_variables
            .iter()
            .filter(|(_, g)| g.space == naga::AddressSpace::Uniform)
            .collect();
        assert_eq!(uniforms.len(), 1, "{}: one uniform", shader.file_name());
        let wgsl = naga_layout(&module, &layouter, uniforms[0].1.ty);
        let (host, _) = host_side(shader);
        assert_eq!(host, wgsl, "{}: parameter struct", shader.file_name());
    }
}

#[test]
fn term_desc_matches_the_wgsl_table() {
    let host = rust_layout!(TermDesc {
        weight,
        bias,
        da,
        dg,
        q_a,
        q_g,
        t_a,
        t_g
    });
    let mut checked = 0;
    for shader in Shader::ALL {
        let (module, layouter) = parse(shader);
        let desc = module
            .types
            .iter()
            .find(|(_, t)| t.name.as_deref() == Some("TermDesc"))
            .map(|(h, _)| h);
        let (_, reads_table) = host_side(shader);
        assert_eq!(
            desc.is_some(),
            reads_table,
            "{}: TermDesc declared iff the host passes a term table",
            shader.file_name()
        );
        let Some(desc) = desc else { continue };
        assert_eq!(
            naga_layout(&module, &layouter, desc),
            host,
            "{}",
            shader.file_name()
        );
        // The table binding is a runtime-sized array of it, strided by the Rust size.
        let table = module
            .global_variables
            .iter()
            .find(|(_, g)| g.name.as_deref() == Some("terms"))
            .unwrap_or_else(|| panic!("{}: no `terms` binding", shader.file_name()))
            .1;
        match module.types[table.ty].inner {
            naga::TypeInner::Array { base, stride, .. } => {
                assert_eq!(base, desc, "{}", shader.file_name());
                assert_eq!(
                    stride as usize,
                    size_of::<TermDesc>(),
                    "{}",
                    shader.file_name()
                );
            }
            ref other => panic!("{}: `terms` is {other:?}", shader.file_name()),
        }
        checked += 1;
    }
    assert_eq!(
        checked, 2,
        "fused_scores and self_influence read the term table"
    );
}
