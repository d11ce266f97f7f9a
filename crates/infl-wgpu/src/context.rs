//! The device, its pipelines (a table indexed by [`Shader`]), and the plumbing shared by
//! the kernels: typed parameter buffers, storage buffers, error scopes, and a two-slot
//! readback stream that overlaps GPU work with host copies.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::sync::mpsc;

use wgpu::util::DeviceExt;

use crate::Tiles;
use crate::error::{GpuError, Result};
use crate::kernels::{self, Workgroups};
use crate::plan::{BlockCaps, ChunkLimits};
use crate::source::Shader;

/// A compute pipeline and its bind-group layout.
#[derive(Debug)]
pub(crate) struct Kernel {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

impl Kernel {
    /// Compiles `shader` with its override constants.
    fn compile(device: &wgpu::Device, shader: Shader, constants: &[(&str, f64)]) -> Self {
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(shader.file_name()),
            source: wgpu::ShaderSource::Wgsl(Cow::Borrowed(shader.source())),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(shader.file_name()),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        Self {
            layout: pipeline.get_bind_group_layout(0),
            pipeline,
        }
    }
}

/// Everything a [`WgpuBackend`](crate::WgpuBackend) shares between clones.
#[derive(Debug)]
pub(crate) struct Context {
    pub info: wgpu::AdapterInfo,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub limits: ChunkLimits,
    pub caps: BlockCaps,
    pub tiles: Tiles,
    /// One pipeline per shader, at [`Shader::index`].
    kernels: [Kernel; Shader::ALL.len()],
}

/// A uniform buffer holding one `P`, the parameter struct of a shader (see
/// [`kernels`](crate::kernels)); written only through [`Context::write_params`].
#[derive(Debug)]
pub(crate) struct Uniform<P> {
    buffer: wgpu::Buffer,
    params: PhantomData<P>,
}

impl<P> Uniform<P> {
    /// The buffer, for bind groups.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}

/// Work streamed block by block through [`Context::stream`].
pub(crate) trait Streamed {
    /// What identifies a block (its rows, or its rows and columns).
    type Block;

    /// Uploads `block`'s inputs and records its commands, ending with a copy of its result
    /// into `readback`; returns the number of bytes to read back.
    fn record(
        &mut self,
        ctx: &Context,
        block: &Self::Block,
        enc: &mut wgpu::CommandEncoder,
        readback: &wgpu::Buffer,
    ) -> Result<u64>;

    /// Receives the block's result as `u32` words.
    fn consume(&mut self, block: Self::Block, words: &[u32]) -> Result<()>;
}

/// Buffer usages of kernel operands and results.
const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_DST)
    .union(wgpu::BufferUsages::COPY_SRC);

impl Context {
    /// Compiles every shader (inside error scopes, so a compilation failure is an error).
    pub fn new(
        info: wgpu::AdapterInfo,
        device: wgpu::Device,
        queue: wgpu::Queue,
        limits: ChunkLimits,
        caps: BlockCaps,
        workgroups: Workgroups,
    ) -> Result<Self> {
        let adapter = crate::adapter::describe(&info);
        let kernels = Self::scoped(&device, "compiling kernels", &adapter, || {
            Ok(Shader::ALL
                .map(|s| Kernel::compile(&device, s, &kernels::overrides(s, &workgroups))))
        })?;
        Ok(Self {
            info,
            device,
            queue,
            limits,
            caps,
            tiles: workgroups.tiles,
            kernels,
        })
    }

    /// The adapter's description, for messages.
    pub fn adapter(&self) -> String {
        crate::adapter::describe(&self.info)
    }

    /// The pipeline of `shader`.
    pub fn kernel(&self, shader: Shader) -> &Kernel {
        &self.kernels[shader.index()]
    }

    /// Most workgroups (rows, for the one-workgroup-per-row kernels) of one dispatch.
    pub fn max_workgroups(&self) -> usize {
        self.limits.max_workgroups_per_dim.max(1) as usize
    }

    /// Runs `f` inside error scopes and turns any captured device error into a
    /// [`GpuError::Device`].
    pub fn scoped<T>(
        device: &wgpu::Device,
        op: &'static str,
        adapter: &str,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let internal = device.push_error_scope(wgpu::ErrorFilter::Internal);
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let r = f();
        let errors = [
            pollster::block_on(validation.pop()),
            pollster::block_on(internal.pop()),
            pollster::block_on(oom.pop()),
        ];
        if let Some(e) = errors.into_iter().flatten().next() {
            return Err(GpuError::Device {
                op,
                adapter: adapter.to_string(),
                details: e.to_string(),
            });
        }
        r
    }

    /// A storage buffer of at least `bytes` bytes (never empty).
    pub fn storage(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(4).next_multiple_of(4),
            usage: STORAGE,
            mapped_at_creation: false,
        })
    }

    /// A storage buffer holding `data` (a table of a shader's structs, e.g.
    /// [`TermDesc`](crate::kernels::TermDesc)); 4 zero bytes when `data` is empty.
    pub fn storage_init<T: bytemuck::Pod>(&self, label: &str, data: &[T]) -> wgpu::Buffer {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: if bytes.is_empty() { &[0; 4] } else { bytes },
                usage: STORAGE,
            })
    }

    /// A uniform buffer for one `P`, written later with [`Context::write_params`].
    pub fn uniform<P: bytemuck::Pod>(&self, label: &str) -> Uniform<P> {
        Uniform {
            buffer: self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: size_of::<P>().max(16) as u64,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            params: PhantomData,
        }
    }

    /// Queues a write of a shader's parameters (ordered before the next submit).
    pub fn write_params<P: bytemuck::Pod>(&self, uniform: &Uniform<P>, params: &P) {
        self.queue
            .write_buffer(&uniform.buffer, 0, bytemuck::bytes_of(params));
    }

    /// Two host-mappable buffers of `bytes` bytes, for [`Context::stream`].
    pub fn readbacks(&self, label: &str, bytes: u64) -> [wgpu::Buffer; 2] {
        let make = || {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes.max(4).next_multiple_of(4),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        [make(), make()]
    }

    /// Queues a write of `f32`s at element offset `at` (ordered before the next submit).
    pub fn write_f32(&self, buf: &wgpu::Buffer, at: usize, data: &[f32]) {
        if !data.is_empty() {
            self.queue
                .write_buffer(buf, (at * 4) as u64, bytemuck::cast_slice(data));
        }
    }

    /// A bind group binding `buffers` to bindings `0..` of `shader`'s pipeline.
    pub fn bind(&self, shader: Shader, buffers: &[&wgpu::Buffer]) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry<'_>> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(shader.file_name()),
            layout: &self.kernel(shader).layout,
            entries: &entries,
        })
    }

    /// Records one dispatch of `shader` over `x × y` workgroups.
    pub fn dispatch(
        &self,
        enc: &mut wgpu::CommandEncoder,
        shader: Shader,
        group: &wgpu::BindGroup,
        x: u32,
        y: u32,
    ) {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(shader.file_name()),
            timestamp_writes: None,
        });
        pass.set_pipeline(&self.kernel(shader).pipeline);
        pass.set_bind_group(0, group, &[]);
        pass.dispatch_workgroups(x, y, 1);
    }

    /// Streams blocks through the GPU with two readback slots: block `i + 1` is uploaded
    /// and submitted before block `i` is mapped and consumed, so the device computes while
    /// the host copies (see [`Streamed`]).
    pub fn stream<S: Streamed>(
        &self,
        op: &'static str,
        readbacks: &[wgpu::Buffer; 2],
        blocks: impl IntoIterator<Item = S::Block>,
        job: &mut S,
    ) -> Result<()> {
        let adapter = self.adapter();
        Self::scoped(&self.device, op, &adapter, || {
            let mut pending: Option<(usize, wgpu::SubmissionIndex, u64, S::Block)> = None;
            let mut slot = 0;
            for block in blocks {
                let mut enc = self
                    .device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(op) });
                let bytes = job.record(self, &block, &mut enc, &readbacks[slot])?;
                let sub = self.queue.submit([enc.finish()]);
                if let Some((s, sub, bytes, b)) = pending.take() {
                    self.finish(op, &readbacks[s], sub, bytes, |w| job.consume(b, w))?;
                }
                pending = Some((slot, sub, bytes, block));
                slot ^= 1;
            }
            if let Some((s, sub, bytes, b)) = pending.take() {
                self.finish(op, &readbacks[s], sub, bytes, |w| job.consume(b, w))?;
            }
            Ok(())
        })
    }

    /// Maps the first `bytes` of `buf` once submission `sub` is done and hands them over.
    fn finish(
        &self,
        op: &'static str,
        buf: &wgpu::Buffer,
        sub: wgpu::SubmissionIndex,
        bytes: u64,
        f: impl FnOnce(&[u32]) -> Result<()>,
    ) -> Result<()> {
        if bytes == 0 {
            return f(&[]);
        }
        let device_err = |details: String| GpuError::Device {
            op,
            adapter: self.adapter(),
            details,
        };
        let slice = buf.slice(..bytes);
        let (tx, rx) = mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(sub),
                timeout: None,
            })
            .map_err(|e| device_err(format!("waiting for the device: {e}")))?;
        rx.recv()
            .map_err(|_| device_err("readback callback was dropped".into()))?
            .map_err(|e| device_err(format!("mapping the readback buffer: {e}")))?;
        let r = {
            let view = slice
                .get_mapped_range()
                .map_err(|e| device_err(format!("reading the readback buffer: {e}")))?;
            match bytemuck::try_cast_slice::<u8, u32>(&view) {
                Ok(words) => f(words),
                Err(_) => f(&bytemuck::pod_collect_to_vec::<u8, u32>(&view)),
            }
        };
        buf.unmap();
        r
    }
}
