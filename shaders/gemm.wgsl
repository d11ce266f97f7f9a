// General tiled matrix product: out = a · bᵀ (`b_trans = 1`, b is [n, k]) or out = a · b
// (`b_trans = 0`, b is [k, n]); all row-major.
//
// One workgroup computes a TILE_M × TILE_N tile, each invocation a 4 × 4 register
// micro-tile, from TILE_K-deep slabs staged in workgroup memory. Tile and workgroup sizes
// are pipeline-overridable constants.

struct Dims {
    m: u32,
    n: u32,
    k: u32,
    // 1 when b is stored [n, k] (out = a · bᵀ), 0 when it is [k, n].
    b_trans: u32,
    // Row stride of `out` (elements).
    ld_out: u32,
    // Row stride of `b` (elements): k when b_trans, else its column count.
    ld_b: u32,
    _pad0: u32,
    _pad1: u32,
}

override WG_N: u32 = 16u;
override WG_M: u32 = 16u;
override TILE_K: u32 = 16u;

const MICRO: u32 = 4u;

override TILE_N: u32 = WG_N * MICRO;
override TILE_M: u32 = WG_M * MICRO;
override THREADS: u32 = WG_N * WG_M;

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// Slabs, stored k-major.
var<workgroup> s_a: array<f32, TILE_M * TILE_K>;
var<workgroup> s_b: array<f32, TILE_N * TILE_K>;

@compute @workgroup_size(WG_N, WG_M, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let n0 = wid.x * TILE_N;
    let m0 = wid.y * TILE_M;
    let flat = lid.y * WG_N + lid.x;
    var acc: array<f32, MICRO * MICRO>;
    for (var k0 = 0u; k0 < dims.k; k0 += TILE_K) {
        for (var e = flat; e < TILE_M * TILE_K; e += THREADS) {
            let r = e / TILE_K;
            let kk = e % TILE_K;
            let i = m0 + r;
            let k = k0 + kk;
            var v = 0.0;
            if (i < dims.m && k < dims.k) {
                v = a[i * dims.k + k];
            }
            s_a[kk * TILE_M + r] = v;
        }
        if (dims.b_trans == 1u) {
            for (var e = flat; e < TILE_N * TILE_K; e += THREADS) {
                let r = e / TILE_K;
                let kk = e % TILE_K;
                let j = n0 + r;
                let k = k0 + kk;
                var v = 0.0;
                if (j < dims.n && k < dims.k) {
                    v = b[j * dims.ld_b + k];
                }
                s_b[kk * TILE_N + r] = v;
            }
        } else {
            // b is [k, n]: consecutive invocations read consecutive columns.
            for (var e = flat; e < TILE_N * TILE_K; e += THREADS) {
                let kk = e / TILE_N;
                let r = e % TILE_N;
                let j = n0 + r;
                let k = k0 + kk;
                var v = 0.0;
                if (j < dims.n && k < dims.k) {
                    v = b[k * dims.ld_b + j];
                }
                s_b[kk * TILE_N + r] = v;
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk++) {
            var xa: array<f32, MICRO>;
            var xb: array<f32, MICRO>;
            for (var i = 0u; i < MICRO; i++) {
                xa[i] = s_a[kk * TILE_M + lid.y + i * WG_M];
                xb[i] = s_b[kk * TILE_N + lid.x + i * WG_N];
            }
            for (var i = 0u; i < MICRO; i++) {
                for (var j = 0u; j < MICRO; j++) {
                    acc[i * MICRO + j] = fma(xa[i], xb[j], acc[i * MICRO + j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < MICRO; i++) {
        let r = m0 + lid.y + i * WG_M;
        for (var j = 0u; j < MICRO; j++) {
            let c = n0 + lid.x + j * WG_N;
            if (r < dims.m && c < dims.n) {
                out[r * dims.ld_out + c] = acc[i * MICRO + j];
            }
        }
    }
}
