// Fused score tile: S[q, t] = Σ_c w_c · (g_q·g_t) · (a_q·a_t + bias_c) over all terms c.
//
// One workgroup computes a TILE_Q × TILE_T tile of the score block; each invocation owns a
// 4 × 4 register micro-tile. For every term the two grams of the tile (A_q A_tᵀ and
// G_q G_tᵀ) are accumulated in registers from TILE_K-wide slabs staged in workgroup memory,
// combined, and added to the tile's accumulator: no gram ever reaches global memory.
// Every output element sums its dot products in the same order whatever its position, so
// a score does not depend on how the host split the problem into blocks.
//
// Tile and workgroup sizes are pipeline-overridable constants (set by the host).

struct Dims {
    // Query rows of this block.
    q_rows: u32,
    // Train rows of this block.
    t_rows: u32,
    // Number of terms in `terms`.
    n_terms: u32,
    // Row stride of `out` (elements).
    ld_out: u32,
}

// One (checkpoint, layer) term. Offsets are in elements into `query` / `train`; each
// factor block is row-major with `da` (A) or `dg` (G) columns.
struct TermDesc {
    weight: f32,
    bias: f32,
    da: u32,
    dg: u32,
    q_a: u32,
    q_g: u32,
    t_a: u32,
    t_g: u32,
}

// Invocations per workgroup along train (x) and query (y).
override WG_T: u32 = 16u;
override WG_Q: u32 = 16u;
// Depth of a slab staged in workgroup memory.
override TILE_K: u32 = 16u;

// Register micro-tile of one invocation (fixed: function-scope arrays need constant sizes).
const MICRO: u32 = 4u;

override TILE_T: u32 = WG_T * MICRO;
override TILE_Q: u32 = WG_Q * MICRO;
override THREADS: u32 = WG_T * WG_Q;

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> terms: array<TermDesc>;
@group(0) @binding(2) var<storage, read> query: array<f32>;
@group(0) @binding(3) var<storage, read> train: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

// Slabs, stored k-major: s_q[k * TILE_Q + row].
var<workgroup> s_q: array<f32, TILE_Q * TILE_K>;
var<workgroup> s_t: array<f32, TILE_T * TILE_K>;

// Accumulates the gram tile of one factor (width `d`, offsets `q_off`/`t_off`) into `gram`.
fn gram_tile(
    gram: ptr<function, array<f32, MICRO * MICRO>>,
    d: u32,
    q_off: u32,
    t_off: u32,
    q0: u32,
    t0: u32,
    lid: vec3<u32>,
) {
    let flat = lid.y * WG_T + lid.x;
    for (var k0 = 0u; k0 < d; k0 += TILE_K) {
        // Stage the query slab: consecutive invocations read consecutive k of a row.
        for (var e = flat; e < TILE_Q * TILE_K; e += THREADS) {
            let r = e / TILE_K;
            let kk = e % TILE_K;
            let q = q0 + r;
            let k = k0 + kk;
            var v = 0.0;
            if (q < dims.q_rows && k < d) {
                v = query[q_off + q * d + k];
            }
            s_q[kk * TILE_Q + r] = v;
        }
        for (var e = flat; e < TILE_T * TILE_K; e += THREADS) {
            let r = e / TILE_K;
            let kk = e % TILE_K;
            let t = t0 + r;
            let k = k0 + kk;
            var v = 0.0;
            if (t < dims.t_rows && k < d) {
                v = train[t_off + t * d + k];
            }
            s_t[kk * TILE_T + r] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk++) {
            var xq: array<f32, MICRO>;
            var xt: array<f32, MICRO>;
            for (var i = 0u; i < MICRO; i++) {
                // Rows of a micro-tile are strided by the workgroup size (fewer bank conflicts).
                xq[i] = s_q[kk * TILE_Q + lid.y + i * WG_Q];
                xt[i] = s_t[kk * TILE_T + lid.x + i * WG_T];
            }
            for (var i = 0u; i < MICRO; i++) {
                for (var j = 0u; j < MICRO; j++) {
                    (*gram)[i * MICRO + j] = fma(xq[i], xt[j], (*gram)[i * MICRO + j]);
                }
            }
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(WG_T, WG_Q, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let t0 = wid.x * TILE_T;
    let q0 = wid.y * TILE_Q;
    var acc: array<f32, MICRO * MICRO>;
    for (var c = 0u; c < dims.n_terms; c++) {
        let term = terms[c];
        var ga: array<f32, MICRO * MICRO>;
        var gg: array<f32, MICRO * MICRO>;
        gram_tile(&ga, term.da, term.q_a, term.t_a, q0, t0, lid);
        gram_tile(&gg, term.dg, term.q_g, term.t_g, q0, t0, lid);
        for (var i = 0u; i < MICRO * MICRO; i++) {
            acc[i] += term.weight * ((ga[i] + term.bias) * gg[i]);
        }
    }
    for (var i = 0u; i < MICRO; i++) {
        let q = q0 + lid.y + i * WG_Q;
        for (var j = 0u; j < MICRO; j++) {
            let t = t0 + lid.x + j * WG_T;
            if (q < dims.q_rows && t < dims.t_rows) {
                out[q * dims.ld_out + t] = acc[i * MICRO + j];
            }
        }
    }
}
