//! Adapter selection: which adapters a caller admits ([`AdapterPolicy`]) and which of them
//! is opened.
//!
//! The instance honours `WGPU_BACKEND` (which wgpu backends to search), and selection
//! honours `WGPU_ADAPTER_NAME` (a case-insensitive fragment of the adapter's name). Among
//! the remaining adapters that can run compute shaders, the kind of device decides:
//! discrete, then integrated, virtual, other, and software (`DeviceType::Cpu`) last, and
//! at equal kind Vulkan/Metal/DX12 before OpenGL; software adapters are excluded
//! altogether under [`AdapterPolicy::HardwareOnly`].
//!
//! `INFL_GPU_INDEX=N` picks the N-th (0-based) physical GPU instead: the remaining
//! adapters, one per device (its best API), in PCI bus order — the order CUDA numbers GPUs
//! under `CUDA_DEVICE_ORDER=PCI_BUS_ID`, so a process handed GPU `i` by a scheduler (Ray's
//! `ray.get_gpu_ids()`, Slurm's `SLURM_LOCALID`) opens that same card even though Vulkan
//! ignores `CUDA_VISIBLE_DEVICES`. Adapters that report no bus id keep their enumeration
//! order, after those that do.

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
    if candidates.is_empty() {
        return Err(GpuError::NoAdapter {
            backends: format!("{backends:?}"),
            seen: names(&all),
        });
    }
    let Ok(wanted) = std::env::var(INDEX_VAR) else {
        return Ok(candidates.swap_remove(0));
    };
    let infos: Vec<wgpu::AdapterInfo> = candidates.iter().map(|a| a.get_info()).collect();
    let order = physical_order(&infos);
    match wanted
        .trim()
        .parse::<usize>()
        .ok()
        .and_then(|i| order.get(i))
    {
        Some(&i) => Ok(candidates.swap_remove(i)),
        None => Err(GpuError::NoAdapterAtIndex {
            wanted,
            count: order.len(),
            available: (order.iter().map(|&i| describe(&infos[i])))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// The environment variable that picks a physical GPU by index (see the module docs).
pub const INDEX_VAR: &str = "INFL_GPU_INDEX";

/// Positions in `infos` (ranked best first) of one adapter per physical device — the first,
/// i.e. best-ranked, of those sharing a PCI bus id — in PCI bus order, adapters without a
/// bus id last in their given order.
pub fn physical_order(infos: &[wgpu::AdapterInfo]) -> Vec<usize> {
    let mut seen = std::collections::HashSet::new();
    let mut order: Vec<usize> = (0..infos.len())
        .filter(|&i| {
            let bus = &infos[i].device_pci_bus_id;
            bus.is_empty() || seen.insert(bus.to_lowercase())
        })
        .collect();
    // Stable: equal keys (no bus id) keep their order.
    order.sort_by_key(|&i| {
        let bus = infos[i].device_pci_bus_id.to_lowercase();
        (bus.is_empty(), bus)
    });
    order
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

    fn info(name: &str, bus: &str, backend: wgpu::Backend) -> wgpu::AdapterInfo {
        let mut info = wgpu::AdapterInfo::new(wgpu::DeviceType::DiscreteGpu, backend);
        info.name = name.into();
        info.device_pci_bus_id = bus.into();
        info
    }

    #[test]
    fn physical_order_is_pci_bus_order_with_one_adapter_per_device() {
        use wgpu::Backend::{Gl, Vulkan};
        // Ranked best first (Vulkan before GL); enumeration order is not bus order.
        let infos = [
            info("b-vk", "0000:41:00.0", Vulkan),
            info("a-vk", "0000:01:00.0", Vulkan),
            info("nobus", "", Vulkan),
            info("b-gl", "0000:41:00.0", Gl),
            info("A-gl", "0000:01:00.0", Gl),
            info("c-vk", "0000:C1:00.0", Vulkan),
        ];
        let names: Vec<&str> = (physical_order(&infos).iter())
            .map(|&i| infos[i].name.as_str())
            .collect();
        assert_eq!(names, ["a-vk", "b-vk", "c-vk", "nobus"]);
    }

    #[test]
    fn software_ranks_last() {
        assert!(rank(wgpu::DeviceType::DiscreteGpu) < rank(wgpu::DeviceType::Cpu));
        assert!(rank(wgpu::DeviceType::IntegratedGpu) < rank(wgpu::DeviceType::Other));
    }
}
