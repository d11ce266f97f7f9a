//! Choosing a backend at run time: the CPU, or a GPU through wgpu (cargo feature `gpu`,
//! on by default; as burn puts each backend behind a feature).

use infl_core::Backend;
use infl_cpu::CpuBackend;

use crate::Result;

/// Which backend to run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// A hardware GPU if there is one, else the CPU (never a software adapter).
    #[default]
    Auto,
    /// The CPU backend.
    Cpu,
    /// Any GPU adapter, software included; an error if there is none.
    Gpu,
}

/// Opens the backend asked for: `Cpu` → the CPU backend (`threads`, default one per core);
/// `Gpu` → any wgpu adapter, software included, or an error naming what was searched;
/// `Auto` → a hardware GPU if there is one, else the CPU backend. `WGPU_BACKEND` and
/// `WGPU_ADAPTER_NAME` are honoured. Without the `gpu` feature, `Gpu` is an error and
/// `Auto` is the CPU.
pub fn select_backend(choice: BackendChoice, threads: Option<usize>) -> Result<Box<dyn Backend>> {
    if let Some(gpu) = open_gpu(choice)? {
        return Ok(gpu);
    }
    Ok(Box::new(match threads {
        Some(t) => CpuBackend::with_threads(t)?,
        None => CpuBackend::new(),
    }))
}

#[cfg(feature = "gpu")]
fn open_gpu(choice: BackendChoice) -> Result<Option<Box<dyn Backend>>> {
    use infl_wgpu::{AdapterPolicy, Options, WgpuBackend};
    let policy = match choice {
        BackendChoice::Cpu => return Ok(None),
        BackendChoice::Auto => AdapterPolicy::HardwareOnly,
        BackendChoice::Gpu => AdapterPolicy::AnyIncludingSoftware,
    };
    let gpu = WgpuBackend::select(policy, Options::default()).map_err(infl_core::Error::from)?;
    Ok(gpu.map(|g| Box::new(g) as Box<dyn Backend>))
}

#[cfg(not(feature = "gpu"))]
fn open_gpu(choice: BackendChoice) -> Result<Option<Box<dyn Backend>>> {
    match choice {
        BackendChoice::Gpu => Err(crate::Error::config(
            "backend",
            "this build of infl has no GPU backend (cargo feature `gpu` is off)",
        )),
        BackendChoice::Auto | BackendChoice::Cpu => Ok(None),
    }
}
