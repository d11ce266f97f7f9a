// Self-influence: out[n] = Σ_c w_c · ‖g_n‖² · (‖a_n‖² + bias_c).
//
// One workgroup per example row: the invocations stride over the row's columns (so reads
// are coalesced) and the partial sums of squares are reduced in workgroup memory.

struct Dims {
    // Rows of this block.
    rows: u32,
    // Number of terms in `terms`.
    n_terms: u32,
    // First row of this dispatch (for dispatches split by the workgroup-count limit).
    row0: u32,
    _pad: u32,
}

// Same layout as in fused_scores.wgsl; only the train offsets are used.
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

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> terms: array<TermDesc>;
@group(0) @binding(2) var<storage, read> data: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

var<workgroup> part: array<f32, WG>;

// Sum of squares of `d` elements at `off`, reduced over the workgroup (result in part[0]).
fn sum_sq(off: u32, d: u32, lid: u32) -> f32 {
    var s = 0.0;
    for (var i = lid; i < d; i += WG) {
        let x = data[off + i];
        s = fma(x, x, s);
    }
    part[lid] = s;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half >>= 1u) {
        if (lid < half) {
            part[lid] += part[lid + half];
        }
        workgroupBarrier();
    }
    let total = part[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(WG, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = dims.row0 + wid.x;
    var acc = 0.0;
    for (var c = 0u; c < dims.n_terms; c++) {
        let term = terms[c];
        let na = sum_sq(term.t_a + row * term.da, term.da, lid);
        let ng = sum_sq(term.t_g + row * term.dg, term.dg, lid);
        acc += term.weight * (ng * (na + term.bias));
    }
    if (lid == 0u && row < dims.rows) {
        out[row] = acc;
    }
}
