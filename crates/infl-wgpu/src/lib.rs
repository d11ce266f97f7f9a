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
//! Layout: [`kernels`] has one module per shader with its `#[repr(C)]` parameter struct
//! (the shader's ABI, checked against naga's layout of the WGSL struct by a test) and a
//! `call_*` function recording its dispatch; the private `ops` modules are the block loops
//! of the [`Backend`](infl_core::Backend) methods that drive them; [`plan`] cuts problems
//! into blocks.
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
//! - Adapters ([`AdapterPolicy`], [`WgpuBackend::select`]): `HardwareOnly` takes a hardware
//!   adapter or none (the caller falls back to the CPU), `AnyIncludingSoftware` takes any
//!   adapter including software ones. `WGPU_BACKEND` and `WGPU_ADAPTER_NAME` are honoured.
//! - Errors are [`GpuError`]s, kept whole inside [`infl_core::Error::Backend`] at the
//!   `Backend` boundary: `err.backend_error::<GpuError>()` gets them back.

#![deny(missing_docs)]

mod adapter;
mod context;
mod error;
pub mod kernels;
mod ops;
pub mod plan;
pub mod source;

use std::fmt;
use std::sync::Arc;

pub use adapter::{AdapterPolicy, INDEX_VAR, describe, physical_order};
pub use error::{GpuError, Result};
pub use plan::{BlockCaps, ChunkLimits};

use context::Context;
use kernels::Workgroups;

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

/// The outputs one workgroup of a tiled kernel covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputTile {
    /// Query rows (GEMM: output rows).
    pub query: usize,
    /// Train rows (GEMM: output columns).
    pub train: usize,
}

impl Tiles {
    /// The outputs covered by one workgroup.
    pub fn output_tile(&self) -> OutputTile {
        OutputTile {
            query: 4 * self.query as usize,
            train: 4 * self.train as usize,
        }
    }

    /// Bytes of workgroup memory used by the tiled kernels.
    fn workgroup_bytes(&self) -> u32 {
        4 * 4 * (self.query + self.train) * self.depth
    }

    /// Whether a device with `limits` can run this workgroup shape.
    fn fits(&self, limits: &wgpu::Limits) -> bool {
        let invocations = self.train.saturating_mul(self.query);
        self.train > 0
            && self.query > 0
            && self.depth > 0
            && invocations <= limits.max_compute_invocations_per_workgroup
            && self.train <= limits.max_compute_workgroup_size_x
            && self.query <= limits.max_compute_workgroup_size_y
            && self.workgroup_bytes() <= limits.max_compute_workgroup_storage_size
    }
}

/// How to open the GPU backend (which adapter is a separate [`AdapterPolicy`]).
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Chunking limits to use instead of the device's (the tighter of both applies).
    pub limits: Option<ChunkLimits>,
    /// Upper bounds on block sizes.
    pub caps: BlockCaps,
    /// Workgroup shape of the tiled kernels.
    pub tiles: Tiles,
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
    /// Opens the best adapter that `policy` admits (among those `WGPU_BACKEND` and
    /// `WGPU_ADAPTER_NAME` leave) and compiles the kernels; [`GpuError::NoAdapter`] when
    /// there is none.
    pub fn new(policy: AdapterPolicy, options: Options) -> Result<Self> {
        let desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        let backends = desc.backends;
        let instance = wgpu::Instance::new(desc);
        let adapter = adapter::pick_adapter(&instance, backends, policy)?;
        Self::from_adapter(&adapter, options)
    }

    /// Like [`WgpuBackend::new`], but under [`AdapterPolicy::HardwareOnly`] a missing
    /// hardware adapter is `Ok(None)` (the caller then uses the CPU backend). Under
    /// [`AdapterPolicy::AnyIncludingSoftware`] it is an error naming what was found, and
    /// the answer is always `Some` on success.
    pub fn select(policy: AdapterPolicy, options: Options) -> Result<Option<Self>> {
        match Self::new(policy, options) {
            Ok(b) => Ok(Some(b)),
            Err(GpuError::NoAdapter { .. }) if policy == AdapterPolicy::HardwareOnly => Ok(None),
            Err(e) => Err(e),
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
        if !tiles.fits(&limits) {
            return Err(GpuError::Device {
                op: "setup",
                adapter: name,
                details: format!("workgroup shape {tiles:?} exceeds the device's limits"),
            });
        }
        let mut chunk = ChunkLimits::of(&limits);
        if let Some(l) = options.limits {
            chunk = chunk.min(l);
        }
        let workgroups = Workgroups::new(tiles, &limits);
        let ctx = Context::new(info, device, queue, chunk, options.caps, workgroups)?;
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
