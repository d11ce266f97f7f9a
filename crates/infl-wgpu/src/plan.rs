//! Chunking: how a problem is cut into blocks that respect the device's limits.
//!
//! Pure functions of the shapes and of [`ChunkLimits`], so they are unit-tested without a
//! device, and tests can inject tiny limits to force many chunks on small problems.

use crate::OutputTile;
use crate::error::{GpuError, Result};

/// Bytes per `f32`.
const F32: u64 = 4;

/// The device limits that chunking obeys (injectable through
/// [`Options::limits`](crate::Options::limits) to force small chunks in tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkLimits {
    /// Largest storage-buffer binding, in bytes (the device's
    /// `min(max_storage_buffer_binding_size, max_buffer_size)`).
    pub max_binding_bytes: u64,
    /// Largest workgroup count of one dispatch dimension
    /// (`max_compute_workgroups_per_dimension`).
    pub max_workgroups_per_dim: u32,
}

impl ChunkLimits {
    /// The limits of a device.
    pub fn of(limits: &wgpu::Limits) -> Self {
        Self {
            max_binding_bytes: limits
                .max_storage_buffer_binding_size
                .min(limits.max_buffer_size),
            max_workgroups_per_dim: limits.max_compute_workgroups_per_dimension,
        }
    }

    /// The tighter of two sets of limits.
    pub fn min(self, other: Self) -> Self {
        Self {
            max_binding_bytes: self.max_binding_bytes.min(other.max_binding_bytes),
            max_workgroups_per_dim: self
                .max_workgroups_per_dim
                .min(other.max_workgroups_per_dim),
        }
    }

    /// Largest number of elements of `elem_bytes` bytes in one binding (rounded down to
    /// a multiple of 4 bytes, as wgpu copies require).
    fn elems(&self, elem_bytes: u64) -> u64 {
        (self.max_binding_bytes & !3) / elem_bytes
    }
}

/// Upper bounds on block sizes chosen for speed and memory, below the device limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockCaps {
    /// Most query (GEMM: `a`) rows per block.
    pub query_rows: usize,
    /// Most train (GEMM: output column) rows per block.
    pub train_rows: usize,
}

impl Default for BlockCaps {
    fn default() -> Self {
        Self {
            query_rows: 2048,
            train_rows: 8192,
        }
    }
}

/// Block sizes of a two-sided kernel (scores, top-k, GEMM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocks {
    /// Query rows per block.
    pub query: usize,
    /// Train rows per block.
    pub train: usize,
}

/// The shape of a two-sided problem, for [`plan_pair`].
#[derive(Clone, Copy, Debug)]
pub struct PairShape {
    /// Query rows.
    pub queries: usize,
    /// Train rows.
    pub train: usize,
    /// `f32`s per query row in the query binding (all terms' factors).
    pub query_width: usize,
    /// `f32`s per train row in the train binding.
    pub train_width: usize,
    /// Top-k: `k` (each query row of a block then yields `2·min(k, block columns)`
    /// candidates of 8 bytes); `None` for full outputs.
    pub topk: Option<usize>,
    /// Outputs covered by one workgroup.
    pub tile: OutputTile,
}

/// Bytes of top-k candidates per query row and retained column (proponent and opponent,
/// each a column index and a score).
pub const CANDIDATE_BYTES: u64 = 16;

/// Plans blocks for scores, top-k and GEMM so that every binding (factors, the `f32`
/// output block, top-k candidates) and every dispatch fits.
pub fn plan_pair(
    op: &'static str,
    s: &PairShape,
    lim: ChunkLimits,
    caps: BlockCaps,
) -> Result<Blocks> {
    let bytes = lim.max_binding_bytes & !3;
    let rows_fit = |width: usize| -> Result<u64> {
        let fit = lim.elems(F32) / (width.max(1) as u64);
        if fit == 0 {
            Err(GpuError::TooLarge {
                op,
                what: "one row of factors".into(),
                needed: width as u64 * F32,
                limit: lim.max_binding_bytes,
            })
        } else {
            Ok(fit)
        }
    };
    if bytes < CANDIDATE_BYTES {
        return Err(GpuError::TooLarge {
            op,
            what: "one output element".into(),
            needed: CANDIDATE_BYTES,
            limit: lim.max_binding_bytes,
        });
    }
    let wg = lim.max_workgroups_per_dim.max(1) as u64;
    let mut query = (s.queries.max(1) as u64)
        .min(rows_fit(s.query_width)?)
        .min(wg * s.tile.query as u64)
        .min(caps.query_rows.max(1) as u64)
        .min(bytes / F32);
    let mut train = (s.train.max(1) as u64)
        .min(rows_fit(s.train_width)?)
        .min(wg * s.tile.train as u64)
        .min(caps.train_rows.max(1) as u64)
        .min(bytes / (F32 * query));
    if let Some(k) = s.topk {
        // One row's candidates must fit: cap the columns a block keeps per row.
        train = train.min(bytes / CANDIDATE_BYTES).max(1);
        let kept = (k.max(1) as u64).min(train);
        query = query.min(bytes / (CANDIDATE_BYTES * kept));
    }
    Ok(Blocks {
        query: query as usize,
        train: train as usize,
    })
}

/// Rows per block of a one-sided kernel (self-influence) of `width` `f32`s per row.
pub fn plan_rows(
    op: &'static str,
    rows: usize,
    width: usize,
    lim: ChunkLimits,
    cap: usize,
) -> Result<usize> {
    let fit = lim.elems(F32) / (width.max(1) as u64);
    if fit == 0 {
        return Err(GpuError::TooLarge {
            op,
            what: "one row of factors".into(),
            needed: width as u64 * F32,
            limit: lim.max_binding_bytes,
        });
    }
    Ok((rows.max(1) as u64).min(fit).min(cap.max(1) as u64) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(q: usize, t: usize, w: usize) -> PairShape {
        PairShape {
            queries: q,
            train: t,
            query_width: w,
            train_width: w,
            topk: None,
            tile: OutputTile {
                query: 64,
                train: 64,
            },
        }
    }

    #[test]
    fn big_limits_take_whole_problem_up_to_caps() {
        let lim = ChunkLimits {
            max_binding_bytes: 1 << 30,
            max_workgroups_per_dim: 65535,
        };
        let b = plan_pair("t", &shape(100, 300, 10), lim, BlockCaps::default()).unwrap();
        assert_eq!(
            b,
            Blocks {
                query: 100,
                train: 300
            }
        );
        let b = plan_pair(
            "t",
            &shape(10_000, 1_000_000, 10),
            lim,
            BlockCaps::default(),
        )
        .unwrap();
        assert_eq!(
            b,
            Blocks {
                query: 2048,
                train: 8192
            }
        );
    }

    #[test]
    fn bindings_and_dispatches_fit() {
        let lim = ChunkLimits {
            max_binding_bytes: 4096,
            max_workgroups_per_dim: 2,
        };
        let s = shape(1000, 1000, 7);
        let b = plan_pair("t", &s, lim, BlockCaps::default()).unwrap();
        assert!(b.query as u64 * 7 * 4 <= 4096 && b.train as u64 * 7 * 4 <= 4096);
        assert!(b.query as u64 * b.train as u64 * 4 <= 4096);
        assert!(b.query <= 128 && b.train <= 128);
        assert!(b.query >= 1 && b.train >= 1);
    }

    #[test]
    fn topk_candidates_fit() {
        let lim = ChunkLimits {
            max_binding_bytes: 2048,
            max_workgroups_per_dim: 3,
        };
        for k in [1, 5, 127, 128, 129, 299, 10_000] {
            let s = PairShape {
                topk: Some(k),
                ..shape(9, 300, 10)
            };
            let b = plan_pair("t", &s, lim, BlockCaps::default()).unwrap();
            let kept = k.min(b.train) as u64;
            assert!(
                b.query as u64 * kept * CANDIDATE_BYTES <= 2048,
                "k={k} {b:?}"
            );
            assert!(b.query as u64 * b.train as u64 * 4 <= 2048, "k={k} {b:?}");
        }
    }

    #[test]
    fn rows_wider_than_a_binding_are_an_error() {
        let lim = ChunkLimits {
            max_binding_bytes: 64,
            max_workgroups_per_dim: 10,
        };
        let e = plan_pair("scores", &shape(3, 3, 17), lim, BlockCaps::default()).unwrap_err();
        assert!(e.to_string().contains("68 bytes"), "{e}");
        assert!(plan_rows("self", 3, 17, lim, 100).is_err());
        assert_eq!(plan_rows("self", 30, 4, lim, 100).unwrap(), 4);
    }
}
