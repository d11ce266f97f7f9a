//! Backend choice and adapter selection.
//!
//! The instance honours `WGPU_BACKEND` (which wgpu backends to search), and selection
//! honours `WGPU_ADAPTER_NAME` (a case-insensitive fragment of the adapter's name). Among
//! the remaining adapters that can run compute shaders, the kind of device decides:
//! discrete, then integrated, virtual, other, and software (`DeviceType::Cpu`) last, and
//! at equal kind Vulkan/Metal/DX12 before OpenGL; software adapters are excluded
//! altogether when the caller asked for hardware only.

use std::fmt;
use std::str::FromStr;

use crate::error::{GpuError, Result};

/// Which backend a caller wants (the CLI's `--backend auto|cpu|gpu`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BackendChoice {
    /// A hardware GPU adapter if there is one, else the CPU backend. Never a software
    /// adapter.
    #[default]
    Auto,
    /// The CPU backend.
    Cpu,
    /// Any GPU adapter, software included; an error when there is none.
    Gpu,
}

impl BackendChoice {
    /// The choices, in CLI spelling order.
    pub const ALL: [BackendChoice; 3] =
        [BackendChoice::Auto, BackendChoice::Cpu, BackendChoice::Gpu];

    /// The CLI spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            BackendChoice::Auto => "auto",
            BackendChoice::Cpu => "cpu",
            BackendChoice::Gpu => "gpu",
        }
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackendChoice {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(BackendChoice::Auto),
            "cpu" => Ok(BackendChoice::Cpu),
            "gpu" => Ok(BackendChoice::Gpu),
            other => Err(format!(
                "unknown backend {other:?}: expected auto, cpu or gpu"
            )),
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

/// Picks an adapter. `allow_software = false` skips `DeviceType::Cpu` adapters.
pub(crate) fn pick_adapter(
    instance: &wgpu::Instance,
    backends: wgpu::Backends,
    allow_software: bool,
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
    candidates.retain(|a| {
        can_compute(a) && (allow_software || a.get_info().device_type != wgpu::DeviceType::Cpu)
    });
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
    fn choices_parse_and_print() {
        for c in BackendChoice::ALL {
            assert_eq!(c.to_string().parse::<BackendChoice>().unwrap(), c);
        }
        assert_eq!(
            " GPU ".parse::<BackendChoice>().unwrap(),
            BackendChoice::Gpu
        );
        assert!("cuda".parse::<BackendChoice>().is_err());
        assert_eq!(BackendChoice::default(), BackendChoice::Auto);
    }

    #[test]
    fn software_ranks_last() {
        assert!(rank(wgpu::DeviceType::DiscreteGpu) < rank(wgpu::DeviceType::Cpu));
        assert!(rank(wgpu::DeviceType::IntegratedGpu) < rank(wgpu::DeviceType::Other));
    }
}
