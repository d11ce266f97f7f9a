//! The error type of the GPU backend; converted to [`infl_core::Error::Backend`] at the
//! [`infl_core::Backend`] boundary.

/// Errors of the GPU backend, each with the context needed to act on it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GpuError {
    /// No adapter is usable (none found, or `auto` found only software adapters).
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
        infl_core::Error::Backend {
            backend: "wgpu".into(),
            details: e.to_string(),
        }
    }
}

/// Result alias using [`GpuError`].
pub type Result<T, E = GpuError> = std::result::Result<T, E>;
