//! `shaders/topk_rows.wgsl`: the exact top-k proponents and opponents of every row of a
//! score block (radix select), one workgroup per row.

use infl_core::ranges;

use crate::context::{Context, Uniform};
use crate::source::Shader;

const SHADER: Shader = Shader::TopkRows;

/// WGSL `Dims` of `topk_rows.wgsl` (the uniform at binding 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct TopkRowsParams {
    /// Rows of the block.
    pub rows: u32,
    /// Valid columns per row.
    pub cols: u32,
    /// Row stride of the scores, in elements.
    pub ld: u32,
    /// Candidates per list and row (`1 ≤ k ≤ cols`).
    pub k: u32,
    /// First row of this dispatch (set per dispatch when a block is split by the
    /// workgroup-count limit).
    pub row0: u32,
    /// Padding of the WGSL struct.
    pub _pad0: u32,
    /// Padding of the WGSL struct.
    pub _pad1: u32,
    /// Padding of the WGSL struct.
    pub _pad2: u32,
}

/// Override constants: the workgroup size.
pub(crate) fn overrides(workgroup: u32) -> Vec<(&'static str, f64)> {
    vec![("WG", f64::from(workgroup))]
}

/// Parameter buffers and bind groups for blocks of up to `max_rows` rows: one per
/// dispatch, since a block of more rows than the device's workgroup-count limit takes
/// several dispatches in one submission, each with its own `row0`.
#[derive(Debug)]
pub(crate) struct TopkRowsBindings {
    dispatches: Vec<(Uniform<TopkRowsParams>, wgpu::BindGroup)>,
}

impl TopkRowsBindings {
    /// Binds the score block (binding 1) and the candidate buffer (binding 2).
    pub fn new(
        ctx: &Context,
        max_rows: usize,
        scores: &wgpu::Buffer,
        candidates: &wgpu::Buffer,
    ) -> Self {
        let dispatches = ranges(max_rows, ctx.max_workgroups())
            .map(|_| {
                let params = ctx.uniform("topk_rows params");
                let group = ctx.bind(SHADER, &[params.buffer(), scores, candidates]);
                (params, group)
            })
            .collect();
        Self { dispatches }
    }
}

/// Records the selection over `params.rows` rows (`params.row0` is ignored): per row,
/// `k` proponents then `k` opponents as (column, score bits) pairs.
pub(crate) fn call_topk_rows(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    bindings: &TopkRowsBindings,
    params: TopkRowsParams,
) {
    let split = ranges(params.rows as usize, ctx.max_workgroups());
    debug_assert!(split.clone().count() <= bindings.dispatches.len());
    for (rows, (uniform, group)) in split.zip(&bindings.dispatches) {
        let row0 = rows.start as u32;
        ctx.write_params(uniform, &TopkRowsParams { row0, ..params });
        ctx.dispatch(enc, SHADER, group, rows.len() as u32, 1);
    }
}
