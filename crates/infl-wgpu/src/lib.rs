//! The GPU backend of infl: hand-written WGSL kernels on wgpu (Vulkan, Metal, DX12, GL).
//!
//! [`WgpuBackend`] implements [`infl_core::Backend`] with four kernels, whose sources are
//! the plain `.wgsl` files of the top-level `shaders/` folder (embedded by
//! [`source::Shader`]):
//!
//! 1. `fused_scores`: a tiled kernel evaluating `Σ_terms w (G_q G_tᵀ) ⊙ (A_q A_tᵀ + bias)`
//!    for a block of queries × train rows in one pass over all terms; the two grams of a
//!    tile live in registers only.
//! 2. `topk_rows`: an exact per-row radix select of the proponents and opponents of a
//!    score block, so only `k` candidates per row and block are read back; the host merges
//!    them into [`infl_core::TopK`], whose total order makes the result independent of
//!    blocking.
//! 3. `self_influence`: row norms, one workgroup per example.
//! 4. `gemm`: a general tiled matrix product.
//!
//! Design choices:
//! - Inputs are cut into blocks (see [`plan`]) so that no storage binding exceeds the
//!   device's `max_storage_buffer_binding_size` (and `max_buffer_size`) and no dispatch
//!   exceeds `max_compute_workgroups_per_dimension`; the limits can be lowered through
//!   [`Options::limits`] to test chunking on small problems. The device is opened with the
//!   adapter's own limits, not the downlevel defaults.
//! - Blocks are streamed with two readback buffers: the next block is uploaded and
//!   submitted before the previous one is mapped, so device work overlaps host copies.
//! - A score is computed by the same per-element arithmetic whatever block it falls in,
//!   so [`Backend::topk`](infl_core::Backend::topk) agrees exactly with sorting
//!   [`Backend::scores`](infl_core::Backend::scores).
//! - Tile and workgroup sizes are WGSL `override` constants set through the pipeline's
//!   `constants` ([`Tiles`]); shaders are never generated from strings.
//! - Backend choice ([`BackendChoice`], [`WgpuBackend::select`]): `auto` takes a hardware
//!   adapter or none, `gpu` takes any adapter including software ones. `WGPU_BACKEND` and
//!   `WGPU_ADAPTER_NAME` are honoured.

#![deny(missing_docs)]

mod context;
mod device;
mod error;
mod kernels;
pub mod plan;
pub mod source;

use std::fmt;
use std::sync::Arc;

pub use device::{BackendChoice, describe};
pub use error::{GpuError, Result};
pub use plan::{BlockCaps, ChunkLimits};

use context::{Context, Kernel};
use source::Shader;

/// Workgroup shape of the tiled kernels (WGSL override constants). Each invocation owns a
/// 4 × 4 register micro-tile, so a workgroup covers `4·query × 4·train` outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiles {
    /// Invocations along the train (GEMM: output column) axis.
    pub train: u32,
    /// Invocations along the query (GEMM: output row) axis.
    pub query: u32,
    /// Depth of the slabs staged in workgroup memory.
    pub depth: u32,
}

impl Default for Tiles {
    fn default() -> Self {
        Self {
            train: 16,
            query: 16,
            depth: 16,
        }
    }
}

impl Tiles {
    /// Output rows (queries) and columns (train) covered by one workgroup.
    pub fn output_tile(&self) -> (usize, usize) {
        (4 * self.query as usize, 4 * self.train as usize)
    }

    /// Bytes of workgroup memory used by the tiled kernels.
    fn workgroup_bytes(&self) -> u32 {
        4 * 4 * (self.query + self.train) * self.depth
    }
}

/// How to open the GPU backend.
#[derive(Clone, Debug)]
pub struct Options {
    /// Accept software adapters (`DeviceType::Cpu`, e.g. lavapipe). [`BackendChoice::Auto`]
    /// sets this to false.
    pub allow_software: bool,
    /// Chunking limits to use instead of the device's (the tighter of both applies).
    pub limits: Option<ChunkLimits>,
    /// Upper bounds on block sizes.
    pub caps: BlockCaps,
    /// Workgroup shape of the tiled kernels.
    pub tiles: Tiles,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            allow_software: true,
            limits: None,
            caps: BlockCaps::default(),
            tiles: Tiles::default(),
        }
    }
}

/// The GPU backend. Cheap to clone (clones share the device).
#[derive(Clone)]
pub struct WgpuBackend {
    ctx: Arc<Context>,
}

impl fmt::Debug for WgpuBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WgpuBackend")
            .field("adapter", &self.ctx.adapter())
            .field("limits", &self.ctx.limits)
            .field("caps", &self.ctx.caps)
            .field("tiles", &self.ctx.tiles)
            .finish_non_exhaustive()
    }
}

impl WgpuBackend {
    /// Opens the best adapter allowed by `options` (and by `WGPU_BACKEND` /
    /// `WGPU_ADAPTER_NAME`) and compiles the kernels.
    pub fn new(options: Options) -> Result<Self> {
        let desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        let backends = desc.backends;
        let instance = wgpu::Instance::new(desc);
        let adapter = device::pick_adapter(&instance, backends, options.allow_software)?;
        Self::from_adapter(&adapter, options)
    }

    /// Resolves a [`BackendChoice`]: `Cpu` gives `Ok(None)`; `Auto` gives a hardware
    /// adapter or `Ok(None)` when there is none (the caller then uses the CPU backend);
    /// `Gpu` gives any adapter, software included, or an error naming what was found.
    /// `options.allow_software` is overridden by the choice.
    pub fn select(choice: BackendChoice, options: Options) -> Result<Option<Self>> {
        match choice {
            BackendChoice::Cpu => Ok(None),
            BackendChoice::Gpu => Self::new(Options {
                allow_software: true,
                ..options
            })
            .map(Some),
            BackendChoice::Auto => match Self::new(Options {
                allow_software: false,
                ..options
            }) {
                Ok(b) => Ok(Some(b)),
                Err(GpuError::NoAdapter { .. }) => Ok(None),
                Err(e) => Err(e),
            },
        }
    }

    /// Opens a device on a given adapter.
    pub fn from_adapter(adapter: &wgpu::Adapter, options: Options) -> Result<Self> {
        let info = adapter.get_info();
        let name = describe(&info);
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("infl-wgpu"),
            required_features: wgpu::Features::empty(),
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|source| GpuError::RequestDevice {
            adapter: name.clone(),
            source,
        })?;
        let tiles = options.tiles;
        let invocations = tiles.train.saturating_mul(tiles.query);
        if tiles.train == 0
            || tiles.query == 0
            || tiles.depth == 0
            || invocations > limits.max_compute_invocations_per_workgroup
            || tiles.train > limits.max_compute_workgroup_size_x
            || tiles.query > limits.max_compute_workgroup_size_y
            || tiles.workgroup_bytes() > limits.max_compute_workgroup_storage_size
        {
            return Err(GpuError::Device {
                op: "setup",
                adapter: name,
                details: format!("workgroup shape {tiles:?} exceeds the device's limits"),
            });
        }
        // Row kernels: the largest power of two up to 256 the device allows.
        let max_row = limits
            .max_compute_invocations_per_workgroup
            .min(limits.max_compute_workgroup_size_x)
            .clamp(1, 256);
        let row_wg = 1u32 << (31 - max_row.leading_zeros());
        let mut chunk = ChunkLimits::of(&limits);
        if let Some(l) = options.limits {
            chunk = chunk.min(l);
        }
        let ctx = Context::scoped(&device, "compiling kernels", &name, || {
            let t = |p: wgpu::ComputePipeline| Kernel {
                layout: p.get_bind_group_layout(0),
                pipeline: p,
            };
            let (tt, tq, tk) = (tiles.train as f64, tiles.query as f64, tiles.depth as f64);
            let fused = t(Context::kernel(
                &device,
                Shader::FusedScores,
                &[("WG_T", tt), ("WG_Q", tq), ("TILE_K", tk)],
            ));
            let gemm = t(Context::kernel(
                &device,
                Shader::Gemm,
                &[("WG_N", tt), ("WG_M", tq), ("TILE_K", tk)],
            ));
            let wg = [("WG", row_wg as f64)];
            let topk = t(Context::kernel(&device, Shader::TopkRows, &wg));
            let self_influence = t(Context::kernel(&device, Shader::SelfInfluence, &wg));
            Ok(Context {
                info,
                device: device.clone(),
                queue,
                limits: chunk,
                caps: options.caps,
                tiles,
                fused,
                topk,
                self_influence,
                gemm,
            })
        })?;
        Ok(Self { ctx: Arc::new(ctx) })
    }

    /// The adapter in use.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.ctx.info
    }

    /// The chunking limits in force (the device's, lowered by [`Options::limits`]).
    pub fn limits(&self) -> ChunkLimits {
        self.ctx.limits
    }

    /// True when the adapter is a software rasteriser (`DeviceType::Cpu`).
    pub fn is_software(&self) -> bool {
        self.ctx.info.device_type == wgpu::DeviceType::Cpu
    }
}
