// Per-row top-k of a score block, for proponents and opponents at once.
//
// One workgroup handles one row of `scores` (`cols` elements, row stride `ld`). Scores are
// mapped to order-preserving u32 keys (proponents: larger score → larger key; opponents:
// the complement). A 4-pass, 8-bit radix select finds the k-th key of each list; the
// winners are then every element with a larger key (any order) plus the elements equal to
// the k-th key with the lowest column indices (an ordered compaction), which is exactly the
// top-k under the total order "score, then lower index". `-0.0` is treated as `0.0`.
//
// Output per row: `k` proponents then `k` opponents, each as (column, score bits), in no
// particular order; the host sorts and merges them.

struct Dims {
    // Rows of the block.
    rows: u32,
    // Valid columns per row.
    cols: u32,
    // Row stride of `scores` (elements).
    ld: u32,
    // Candidates per list and row (1 ≤ k ≤ cols).
    k: u32,
    // First row of this dispatch (for dispatches split by the workgroup-count limit).
    row0: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> scores: array<f32>;
@group(0) @binding(2) var<storage, read_write> cand: array<vec2<u32>>;

// Radix histograms: proponents in [0, 256), opponents in [256, 512).
var<workgroup> hist: array<atomic<u32>, 512>;
// [proponent prefix, opponent prefix, proponent remaining, opponent remaining]
var<workgroup> sel: array<u32, 4>;
var<workgroup> n_above: array<atomic<u32>, 2>;
var<workgroup> scan_p: array<u32, WG>;
var<workgroup> scan_o: array<u32, WG>;
// Equal-key winners taken so far by earlier chunks: [proponents, opponents].
var<workgroup> taken: array<u32, 2>;

fn prop_key(x: f32) -> u32 {
    var v = x;
    if (v == 0.0) {
        v = 0.0;
    }
    let b = bitcast<u32>(v);
    if ((b & 0x80000000u) != 0u) {
        return ~b;
    }
    return b | 0x80000000u;
}

// Finds the bucket holding the `remaining`-th largest key; updates prefix and remaining.
fn pick(which: u32, shift: u32) {
    var need = sel[2u + which];
    var b = 255i;
    loop {
        let h = atomicLoad(&hist[which * 256u + u32(b)]);
        if (h >= need || b == 0i) {
            break;
        }
        need -= h;
        b -= 1i;
    }
    sel[which] |= u32(b) << shift;
    sel[2u + which] = need;
}

@compute @workgroup_size(WG, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = dims.row0 + wid.x;
    let base = row * dims.ld;
    if (lid == 0u) {
        sel[0] = 0u;
        sel[1] = 0u;
        sel[2] = dims.k;
        sel[3] = dims.k;
        atomicStore(&n_above[0], 0u);
        atomicStore(&n_above[1], 0u);
        taken[0] = 0u;
        taken[1] = 0u;
    }
    var mask = 0u;
    for (var round = 0u; round < 4u; round++) {
        let shift = 24u - 8u * round;
        for (var i = lid; i < 512u; i += WG) {
            atomicStore(&hist[i], 0u);
        }
        workgroupBarrier();
        let pp = sel[0];
        let po = sel[1];
        for (var c = lid; c < dims.cols; c += WG) {
            let kp = prop_key(scores[base + c]);
            let ko = ~kp;
            if ((kp & mask) == pp) {
                atomicAdd(&hist[(kp >> shift) & 255u], 1u);
            }
            if ((ko & mask) == po) {
                atomicAdd(&hist[256u + ((ko >> shift) & 255u)], 1u);
            }
        }
        workgroupBarrier();
        if (lid == 0u) {
            pick(0u, shift);
            pick(1u, shift);
        }
        mask |= 255u << shift;
        workgroupBarrier();
    }
    // Thresholds and how many elements equal to them are still needed.
    let tp = sel[0];
    let to = sel[1];
    let need_p = sel[2];
    let need_o = sel[3];
    let out_p = row * 2u * dims.k;
    let out_o = out_p + dims.k;
    let chunks = (dims.cols + WG - 1u) / WG;
    for (var ch = 0u; ch < chunks; ch++) {
        let c = ch * WG + lid;
        var fp = 0u;
        var fo = 0u;
        if (c < dims.cols) {
            let x = scores[base + c];
            let kp = prop_key(x);
            let ko = ~kp;
            let bits = bitcast<u32>(x);
            if (kp > tp) {
                let s = atomicAdd(&n_above[0], 1u);
                cand[out_p + s] = vec2<u32>(c, bits);
            } else if (kp == tp) {
                fp = 1u;
            }
            if (ko > to) {
                let s = atomicAdd(&n_above[1], 1u);
                cand[out_o + s] = vec2<u32>(c, bits);
            } else if (ko == to) {
                fo = 1u;
            }
        }
        // Inclusive scan of the equal-key flags (Hillis-Steele) to rank ties by column.
        scan_p[lid] = fp;
        scan_o[lid] = fo;
        workgroupBarrier();
        for (var off = 1u; off < WG; off <<= 1u) {
            var vp = scan_p[lid];
            var vo = scan_o[lid];
            if (lid >= off) {
                vp += scan_p[lid - off];
                vo += scan_o[lid - off];
            }
            workgroupBarrier();
            scan_p[lid] = vp;
            scan_o[lid] = vo;
            workgroupBarrier();
        }
        let rp = taken[0] + scan_p[lid] - fp;
        let ro = taken[1] + scan_o[lid] - fo;
        if (fp == 1u && rp < need_p) {
            cand[out_p + (dims.k - need_p) + rp] = vec2<u32>(c, bitcast<u32>(scores[base + c]));
        }
        if (fo == 1u && ro < need_o) {
            cand[out_o + (dims.k - need_o) + ro] = vec2<u32>(c, bitcast<u32>(scores[base + c]));
        }
        workgroupBarrier();
        if (lid == 0u) {
            taken[0] += scan_p[WG - 1u];
            taken[1] += scan_o[WG - 1u];
        }
        workgroupBarrier();
    }
}
