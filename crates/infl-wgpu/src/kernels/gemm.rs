//! `shaders/gemm.wgsl`: a tiled matrix product `a · bᵀ` or `a · b`, one workgroup per
//! output tile.

use crate::Tiles;
use crate::context::{Context, Uniform};
use crate::source::Shader;

const SHADER: Shader = Shader::Gemm;

/// WGSL `Dims` of `gemm.wgsl` (the uniform at binding 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GemmParams {
    /// Rows of `a` and of the output block.
    pub m: u32,
    /// Columns of the output block.
    pub n: u32,
    /// The reduction length (columns of `a`).
    pub k: u32,
    /// 1 when `b` is stored `[n, k]` (`out = a · bᵀ`), 0 when it is `[k, n]`.
    pub b_trans: u32,
    /// Row stride of the output block, in elements.
    pub ld_out: u32,
    /// Row stride of `b`, in elements: `k` when `b_trans`, else its column count.
    pub ld_b: u32,
    /// Padding of the WGSL struct.
    pub _pad0: u32,
    /// Padding of the WGSL struct.
    pub _pad1: u32,
}

/// Override constants: the workgroup shape and slab depth of [`Tiles`] (output rows along
/// `query`, output columns along `train`).
pub(crate) fn overrides(tiles: &Tiles) -> Vec<(&'static str, f64)> {
    vec![
        ("WG_N", f64::from(tiles.train)),
        ("WG_M", f64::from(tiles.query)),
        ("TILE_K", f64::from(tiles.depth)),
    ]
}

/// The storage buffers the shader reads and writes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GemmBuffers<'b> {
    /// The left operand `[m, k]` (binding 1).
    pub a: &'b wgpu::Buffer,
    /// The right operand (binding 2).
    pub b: &'b wgpu::Buffer,
    /// The output block (binding 3).
    pub out: &'b wgpu::Buffer,
}

/// The shader's parameter buffer and bind group, made once per product.
#[derive(Debug)]
pub(crate) struct GemmBindings {
    params: Uniform<GemmParams>,
    group: wgpu::BindGroup,
}

impl GemmBindings {
    /// Binds `buffers` (and a fresh parameter buffer) in the shader's binding order.
    pub fn new(ctx: &Context, buffers: GemmBuffers<'_>) -> Self {
        let params = ctx.uniform("gemm params");
        let group = ctx.bind(
            SHADER,
            &[params.buffer(), buffers.a, buffers.b, buffers.out],
        );
        Self { params, group }
    }
}

/// Records one `m × n` output block: one workgroup per output tile of
/// [`Tiles::output_tile`].
pub(crate) fn call_gemm(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    bindings: &GemmBindings,
    params: GemmParams,
) {
    ctx.write_params(&bindings.params, &params);
    let tile = ctx.tiles.output_tile();
    ctx.dispatch(
        enc,
        SHADER,
        &bindings.group,
        (params.n as usize).div_ceil(tile.train) as u32,
        (params.m as usize).div_ceil(tile.query) as u32,
    );
}
