//! `shaders/self_influence.wgsl`: `Σ w ‖g‖² (‖a‖² + bias)` per example, one workgroup per
//! example.

use infl_core::ranges;

use crate::context::{Context, Uniform};
use crate::source::Shader;

const SHADER: Shader = Shader::SelfInfluence;

/// WGSL `Dims` of `self_influence.wgsl` (the uniform at binding 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SelfInfluenceParams {
    /// Rows of this block.
    pub rows: u32,
    /// Number of entries of the term table.
    pub n_terms: u32,
    /// First row of this dispatch (set per dispatch when a block is split by the
    /// workgroup-count limit).
    pub row0: u32,
    /// Padding of the WGSL struct.
    pub _pad: u32,
}

/// Override constants: the workgroup size.
pub(crate) fn overrides(workgroup: u32) -> Vec<(&'static str, f64)> {
    vec![("WG", f64::from(workgroup))]
}

/// The storage buffers the shader reads and writes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SelfInfluenceBuffers<'b> {
    /// The [`TermDesc`](super::TermDesc) table; only its train offsets are read (binding 1).
    pub terms: &'b wgpu::Buffer,
    /// Packed factors of all terms (binding 2).
    pub data: &'b wgpu::Buffer,
    /// One output per row (binding 3).
    pub out: &'b wgpu::Buffer,
}

/// Parameter buffers and bind groups for blocks of up to `max_rows` rows: one per
/// dispatch (see [`TopkRowsBindings`](super::topk_rows::TopkRowsBindings)).
#[derive(Debug)]
pub(crate) struct SelfInfluenceBindings {
    dispatches: Vec<(Uniform<SelfInfluenceParams>, wgpu::BindGroup)>,
}

impl SelfInfluenceBindings {
    /// Binds `buffers` (and fresh parameter buffers) in the shader's binding order.
    pub fn new(ctx: &Context, max_rows: usize, buffers: SelfInfluenceBuffers<'_>) -> Self {
        let dispatches = ranges(max_rows, ctx.max_workgroups())
            .map(|_| {
                let params = ctx.uniform("self_influence params");
                let group = ctx.bind(
                    SHADER,
                    &[params.buffer(), buffers.terms, buffers.data, buffers.out],
                );
                (params, group)
            })
            .collect();
        Self { dispatches }
    }
}

/// Records the self-influence of `params.rows` rows (`params.row0` is ignored).
pub(crate) fn call_self_influence(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    bindings: &SelfInfluenceBindings,
    params: SelfInfluenceParams,
) {
    let split = ranges(params.rows as usize, ctx.max_workgroups());
    debug_assert!(split.clone().count() <= bindings.dispatches.len());
    for (rows, (uniform, group)) in split.zip(&bindings.dispatches) {
        let row0 = rows.start as u32;
        ctx.write_params(uniform, &SelfInfluenceParams { row0, ..params });
        ctx.dispatch(enc, SHADER, group, rows.len() as u32, 1);
    }
}
