//! Seeded standard-normal draws, the same bits on every platform and thread count:
//! ChaCha8 keyed by the seed (one stream per use), Box–Muller through `libm`'s portable
//! `log`/`cos`/`sin`. Random projections and the solvers' start vectors draw from here.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `len` draws of `N(0, 1)` from ChaCha8 (`seed`, `stream`), in pairs `(r cos t, r sin t)`.
pub(crate) fn standard_normals(seed: u64, stream: u64, len: usize) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    let mut v = Vec::with_capacity(len + 1);
    while v.len() < len {
        // Box–Muller: u1 in (0, 1], u2 in [0, 1).
        let u1 = ((rng.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64;
        let u2 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let r = libm::sqrt(-2.0 * libm::log(u1));
        let t = 2.0 * std::f64::consts::PI * u2;
        v.push(r * libm::cos(t));
        v.push(r * libm::sin(t));
    }
    v.truncate(len);
    v
}
