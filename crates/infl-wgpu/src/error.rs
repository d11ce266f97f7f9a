//! The error type of the GPU backend; wrapped whole in [`infl_core::Error::Backend`] at the
//! [`infl_core::Backend`] boundary, so callers can get it back with
//! [`infl_core::Error::backend_error`] and match on it (e.g. [`GpuError::TooLarge`]).

/// Errors of the GPU backend, each with the context needed to act on it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GpuError {
    /// No adapter is usable (none found, or only software adapters under
    /// [`AdapterPolicy::HardwareOnly`](crate::AdapterPolicy::HardwareOnly)).
    #[error(
        "no usable GPU adapter (backends {backends}; adapters seen: {seen}); install a GPU \
         driver or a software Vulkan driver (Debian: mesa-vulkan-drivers), or use the CPU backend"
    )]
    NoAdapter {
        /// The wgpu backends that were searched (from `WGPU_BACKEND`, default all).
        backends: String,
        /// The adapters that were found but not usable, or `none`.
        seen: String,
    },
    /// `WGPU_ADAPTER_NAME` is set but no adapter name contains it.
    #[error("WGPU_ADAPTER_NAME={wanted:?} matches no adapter; available: {available}")]
    NoMatchingAdapter {
        /// The requested (case-insensitive) name fragment.
        wanted: String,
        /// The adapters that exist.
        available: String,
    },
    /// `INFL_GPU_INDEX` is not a number or is beyond the physical GPUs found.
    #[error(
        "INFL_GPU_INDEX={wanted:?}: expected an index below {count} (the GPUs in PCI bus order: \
         {available})"
    )]
    NoAdapterAtIndex {
        /// The variable's value.
        wanted: String,
        /// How many physical GPUs there are.
        count: usize,
        /// Them, in index order.
        available: String,
    },
    /// The adapter refused to open a device.
    #[error("cannot open a device on adapter {adapter}: {source}")]
    RequestDevice {
        /// The adapter's name.
        adapter: String,
        /// wgpu's error.
        #[source]
        source: wgpu::RequestDeviceError,
    },
    /// One row of an operand does not fit in a single storage binding.
    #[error(
        "{op}: {what} needs {needed} bytes in one storage binding, but the device allows {limit}"
    )]
    TooLarge {
        /// The kernel.
        op: &'static str,
        /// What did not fit.
        what: String,
        /// Bytes needed for the smallest possible chunk.
        needed: u64,
        /// The binding-size limit in force.
        limit: u64,
    },
    /// The device reported an error (validation, out of memory, internal, lost device).
    #[error("{op} on {adapter}: {details}")]
    Device {
        /// The kernel or setup step.
        op: &'static str,
        /// The adapter's name.
        adapter: String,
        /// wgpu's message.
        details: String,
    },
}

impl From<GpuError> for infl_core::Error {
    fn from(e: GpuError) -> Self {
        infl_core::Error::backend("wgpu", e)
    }
}

/// Result alias using [`GpuError`].
pub type Result<T, E = GpuError> = std::result::Result<T, E>;
