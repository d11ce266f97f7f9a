//! `shaders/fused_scores.wgsl`: one score block
//! `S = Σ w (G_q G_tᵀ) ⊙ (A_q A_tᵀ + bias)` over all terms, one workgroup per output tile.

use crate::Tiles;
use crate::context::{Context, Uniform};
use crate::source::Shader;

const SHADER: Shader = Shader::FusedScores;

/// WGSL `Dims` of `fused_scores.wgsl` (the uniform at binding 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct FusedScoresParams {
    /// Query rows of this block.
    pub q_rows: u32,
    /// Train rows of this block.
    pub t_rows: u32,
    /// Number of entries of the term table.
    pub n_terms: u32,
    /// Row stride of the output block, in elements.
    pub ld_out: u32,
}

/// Override constants: the workgroup shape and slab depth of [`Tiles`].
pub(crate) fn overrides(tiles: &Tiles) -> Vec<(&'static str, f64)> {
    vec![
        ("WG_T", f64::from(tiles.train)),
        ("WG_Q", f64::from(tiles.query)),
        ("TILE_K", f64::from(tiles.depth)),
    ]
}

/// The storage buffers the shader reads and writes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FusedScoresBuffers<'b> {
    /// The [`TermDesc`](super::TermDesc) table (binding 1).
    pub terms: &'b wgpu::Buffer,
    /// Packed query factors of all terms (binding 2).
    pub query: &'b wgpu::Buffer,
    /// Packed train factors of all terms (binding 3).
    pub train: &'b wgpu::Buffer,
    /// The score block (binding 4).
    pub out: &'b wgpu::Buffer,
}

/// The shader's parameter buffer and bind group, made once per pass.
#[derive(Debug)]
pub(crate) struct FusedScoresBindings {
    params: Uniform<FusedScoresParams>,
    group: wgpu::BindGroup,
}

impl FusedScoresBindings {
    /// Binds `buffers` (and a fresh parameter buffer) in the shader's binding order.
    pub fn new(ctx: &Context, buffers: FusedScoresBuffers<'_>) -> Self {
        let params = ctx.uniform("fused_scores params");
        let group = ctx.bind(
            SHADER,
            &[
                params.buffer(),
                buffers.terms,
                buffers.query,
                buffers.train,
                buffers.out,
            ],
        );
        Self { params, group }
    }
}

/// Records the computation of one `q_rows × t_rows` score block: one workgroup per output
/// tile of [`Tiles::output_tile`].
pub(crate) fn call_fused_scores(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    bindings: &FusedScoresBindings,
    params: FusedScoresParams,
) {
    ctx.write_params(&bindings.params, &params);
    let tile = ctx.tiles.output_tile();
    ctx.dispatch(
        enc,
        SHADER,
        &bindings.group,
        (params.t_rows as usize).div_ceil(tile.train) as u32,
        (params.q_rows as usize).div_ceil(tile.query) as u32,
    );
}
