//! Adapter selection: which adapters a caller admits ([`AdapterPolicy`]) and which of them
//! is opened.
//!
//! The instance honours `WGPU_BACKEND` (which wgpu backends to search), and selection
//! honours `WGPU_ADAPTER_NAME` (a case-insensitive fragment of the adapter's name). Among
//! the remaining adapters that can run compute shaders, the kind of device decides:
//! discrete, then integrated, virtual, other, and software (`DeviceType::Cpu`) last, and
//! at equal kind Vulkan/Metal/DX12 before OpenGL; software adapters are excluded
//! altogether under [`AdapterPolicy::HardwareOnly`].

use crate::error::{GpuError, Result};

/// Which adapters [`WgpuBackend::new`](crate::WgpuBackend::new) and
/// [`WgpuBackend::select`](crate::WgpuBackend::select) may open. (Choosing between the
/// CPU and GPU backends is the `infl` crate's business; this is only the GPU side of it.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AdapterPolicy {
    /// Hardware adapters only: software rasterisers (`DeviceType::Cpu`, e.g. lavapipe or
    /// WARP) are skipped, and [`WgpuBackend::select`](crate::WgpuBackend::select) answers
    /// `Ok(None)` when nothing else exists, so the caller can fall back to the CPU
    /// backend (`--backend auto`).
    HardwareOnly,
    /// Any adapter that can run compute shaders, software ones last; no adapter at all is
    /// an error (`--backend gpu`).
    AnyIncludingSoftware,
}

impl AdapterPolicy {
    /// Whether the policy admits an adapter of this device type.
    pub fn admits(self, device_type: wgpu::DeviceType) -> bool {
        match self {
            AdapterPolicy::HardwareOnly => device_type != wgpu::DeviceType::Cpu,
            AdapterPolicy::AnyIncludingSoftware => true,
        }
    }
}

/// A short description of an adapter: `name (backend, device type)`.
pub fn describe(info: &wgpu::AdapterInfo) -> String {
    format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type)
}

fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

/// Native compute APIs before OpenGL at equal device type.
fn api_rank(b: wgpu::Backend) -> u8 {
    match b {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        wgpu::Backend::Gl => 1,
        _ => 2,
    }
}

/// Adapters that can run the kernels: compute shaders and enough storage buffers.
fn can_compute(a: &wgpu::Adapter) -> bool {
    let caps = a.get_downlevel_capabilities();
    caps.flags.contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
        && a.limits().max_storage_buffers_per_shader_stage >= 4
}

/// Picks the best adapter that `policy` admits.
pub(crate) fn pick_adapter(
    instance: &wgpu::Instance,
    backends: wgpu::Backends,
    policy: AdapterPolicy,
) -> Result<wgpu::Adapter> {
    let all = pollster::block_on(instance.enumerate_adapters(backends));
    let names = |v: &[wgpu::Adapter]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.iter()
                .map(|a| describe(&a.get_info()))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let mut candidates: Vec<wgpu::Adapter> = all.clone();
    if let Ok(wanted) = std::env::var("WGPU_ADAPTER_NAME") {
        let w = wanted.to_lowercase();
        candidates.retain(|a| a.get_info().name.to_lowercase().contains(&w));
        if candidates.is_empty() {
            return Err(GpuError::NoMatchingAdapter {
                wanted,
                available: names(&all),
            });
        }
    }
    candidates.retain(|a| can_compute(a) && policy.admits(a.get_info().device_type));
    candidates.sort_by_key(|a| {
        let info = a.get_info();
        (rank(info.device_type), api_rank(info.backend))
    });
    candidates
        .into_iter()
        .next()
        .ok_or_else(|| GpuError::NoAdapter {
            backends: format!("{backends:?}"),
            seen: names(&all),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardware_only_skips_software_adapters() {
        use wgpu::DeviceType as T;
        for t in [T::DiscreteGpu, T::IntegratedGpu, T::VirtualGpu, T::Other] {
            assert!(AdapterPolicy::HardwareOnly.admits(t), "{t:?}");
        }
        assert!(!AdapterPolicy::HardwareOnly.admits(T::Cpu));
        assert!(AdapterPolicy::AnyIncludingSoftware.admits(T::Cpu));
    }

    #[test]
    fn software_ranks_last() {
        assert!(rank(wgpu::DeviceType::DiscreteGpu) < rank(wgpu::DeviceType::Cpu));
        assert!(rank(wgpu::DeviceType::IntegratedGpu) < rank(wgpu::DeviceType::Other));
    }
}
