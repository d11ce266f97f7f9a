//! The host side of the shaders, one module per `.wgsl` file (as in candle-metal-kernels):
//! each module holds its shader's parameter struct, the buffers it binds, its override
//! constants and a `call_*` function that writes the parameters and records the
//! dispatch(es). The block loops that drive them live in the crate's `ops` modules.
//!
//! The `#[repr(C)]` structs here are the shaders' ABI: each mirrors a WGSL struct field by
//! field, under the same names and with its padding spelled out, so that
//! [`bytemuck::bytes_of`] of it is exactly what the shader reads. `tests/shaders.rs` checks
//! every struct's size and field offsets against naga's layout of the WGSL source.
//!
//! | shader | uniform `dims` | storage tables |
//! |--------|----------------|----------------|
//! | `fused_scores.wgsl` | [`FusedScoresParams`] | [`TermDesc`] |
//! | `topk_rows.wgsl` | [`TopkRowsParams`] | |
//! | `self_influence.wgsl` | [`SelfInfluenceParams`] | [`TermDesc`] |
//! | `gemm.wgsl` | [`GemmParams`] | |

pub mod fused_scores;
pub mod gemm;
pub mod self_influence;
pub mod topk_rows;

pub use fused_scores::FusedScoresParams;
pub use gemm::GemmParams;
pub use self_influence::SelfInfluenceParams;
pub use topk_rows::TopkRowsParams;

use crate::Tiles;
use crate::source::Shader;

/// One (checkpoint, layer) term of the fused and self-influence kernels: WGSL `TermDesc`
/// (identical in `fused_scores.wgsl` and `self_influence.wgsl`). Offsets are in elements
/// into the packed query and train factor buffers; each factor block is row-major with
/// `da` (A) or `dg` (G) columns.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct TermDesc {
    /// The term's weight (its checkpoint's learning rate).
    pub weight: f32,
    /// What the bias adds to every input dot product: 1 when included, else 0
    /// ([`infl_core::Bias::input_dot`]).
    pub bias: f32,
    /// Width of the layer inputs `A`.
    pub da: u32,
    /// Width of the output gradients `G`.
    pub dg: u32,
    /// Offset of the query `A` block.
    pub q_a: u32,
    /// Offset of the query `G` block.
    pub q_g: u32,
    /// Offset of the train `A` block (self-influence: the examples' `A`).
    pub t_a: u32,
    /// Offset of the train `G` block (self-influence: the examples' `G`).
    pub t_g: u32,
}

/// The workgroup sizes every pipeline is compiled with (WGSL `override` constants).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Workgroups {
    /// Shape of the tiled kernels (fused scores, GEMM).
    pub tiles: Tiles,
    /// Invocations of the one-workgroup-per-row kernels (top-k, self-influence): a power
    /// of two, so their tree reductions halve evenly.
    pub rows: u32,
}

impl Workgroups {
    /// `tiles`, and the largest power of two up to 256 invocations the device allows for
    /// the row kernels.
    pub fn new(tiles: Tiles, limits: &wgpu::Limits) -> Self {
        let max_row = limits
            .max_compute_invocations_per_workgroup
            .min(limits.max_compute_workgroup_size_x)
            .clamp(1, 256);
        Self {
            tiles,
            rows: 1u32 << (31 - max_row.leading_zeros()),
        }
    }
}

/// The override constants `shader` is compiled with.
pub(crate) fn overrides(shader: Shader, workgroups: &Workgroups) -> Vec<(&'static str, f64)> {
    match shader {
        Shader::FusedScores => fused_scores::overrides(&workgroups.tiles),
        Shader::Gemm => gemm::overrides(&workgroups.tiles),
        Shader::TopkRows => topk_rows::overrides(workgroups.rows),
        Shader::SelfInfluence => self_influence::overrides(workgroups.rows),
    }
}
