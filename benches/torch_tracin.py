#!/usr/bin/env python3
"""PyTorch peer for the `infl` criterion benchmark: TracInCPFast math by hand.

Inputs are random and precomputed: for each checkpoint c there are penultimate
features A_train [N,D] and A_test [T,D], loss jacobians J_train [N,K] and
J_test [T,K], and a learning rate lr_c. None of that is timed. The modes are:

  scores  S = sum_c lr_c (J_test J_train^T) * (A_test A_train^T)   -> [T,N]
  topk    S as above, then proponents  = topk(S, k, dim=1)
                           opponents   = topk(S, k, dim=1, largest=False)
          Two variants are timed:
            full    : materialise the whole [T,N] matrix, then topk;
            blocked : go over the train dimension in blocks (default 8192), take
                      the top-k of each block and merge (memory O(T*block)).
          The faster one is reported as the peer.
  self    s = sum_c lr_c |J_train|^2 |A_train|^2 (row-wise)            -> [N]
  sgemm   torch.mm on 4096x512 @ 512x4096, for a reference peak (also --sgemm)
  tracincp  TracInCP over the 3 linear layers (with biases) of an MLP, default
          784-256-128-10 (--cp-layers), at --cp-n train, --cp-t test and
          --cp-checkpoints checkpoints (default 20000, 500, 3). One term per
          (checkpoint c, layer L), lr_c = 0.1 / (c + 1):
            S = sum_c sum_L lr_c (G_test G_train^T) * (A_test A_train^T + 1)
          timed as full scores, top-k (full and blocked, as topk above) and
          self-influence  s = sum_c sum_L lr_c |g|^2 (|a|^2 + 1)  (row-wise; two
          variants, square().sum(1) and torch.linalg.vector_norm, the faster kept).
          The kernels are the ones above; the bias only adds 1 to each input gram.
          For a breakdown it also times each side's [T,N] GEMMs alone (input grams
          A_test A_train^T, gradient grams G_test G_train^T; their own FLOPs).

--check-against FILE (not timed) loads the factors and infl's results that
`cargo run --release -p infl-benches --example tracincp_parity` writes, recomputes
scores, top-k and self-influence with the kernels above and compares them.

Each mode runs once to warm up, then `repeats` more times timed with
time.perf_counter. We report the median. GFLOP/s are computed with these
conventions:
  scores/topk: checkpoints * (2*T*N*D + 2*T*N*K + 3*T*N)
  self       : checkpoints * (2*N*(D+K) + 3*N)
  sgemm      : 2*M*K*N
  tracincp   : the scores/topk and self formulas above, summed over checkpoints
               and layers (D, K) = (inputs, outputs) of each layer

Example:
  /work/venv/bin/python benches/torch_tracin.py --n 50000 --t 1000 --d 128 \\
      --k 10 --checkpoints 6 --topk 10 --threads 2 --repeats 5 \\
      --modes topk,scores,self --sgemm --json out.json
  /work/venv/bin/python benches/torch_tracin.py --modes tracincp --threads 2
  target/peers-venv/bin/python benches/torch_tracin.py \\
      --check-against target/tracincp_parity.safetensors
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import torch


# --------------------------------------------------------------------------- data
def make_data(n, t, d, k, checkpoints, seed):
    g = torch.Generator().manual_seed(seed)
    ckpts = []
    for c in range(checkpoints):
        ckpts.append(
            dict(
                a_train=torch.randn(n, d, generator=g),
                a_test=torch.randn(t, d, generator=g),
                j_train=torch.randn(n, k, generator=g),
                j_test=torch.randn(t, k, generator=g),
                lr=float(0.1 * (c + 1)),
            )
        )
    return ckpts


def make_tracincp_data(n, t, layers, checkpoints, seed):
    """One term per (checkpoint, layer), biases included: a [*, D], j [*, K]."""
    g = torch.Generator().manual_seed(seed)
    terms = []
    for c in range(checkpoints):
        for d, k in layers:
            terms.append(
                dict(
                    a_train=torch.rand(n, d, generator=g) * 2 - 1,
                    a_test=torch.rand(t, d, generator=g) * 2 - 1,
                    j_train=torch.rand(n, k, generator=g) * 2 - 1,
                    j_test=torch.rand(t, k, generator=g) * 2 - 1,
                    lr=float(0.1 / (c + 1)),
                    bias=1.0,
                )
            )
    return terms


# --------------------------------------------------------------------------- kernels
# A term's "bias" (absent = 0) is added to every input dot product a_i . a_j: 1 when the
# layer's bias gradient is part of the gradient (TracInCP over a layer with a bias).
def _add_bias(c, gram):
    b = c.get("bias", 0.0)
    if b:
        gram.add_(b)
    return gram


def scores_full(ckpts):
    """S[T,N] = sum_c lr_c (J_test J_train^T) * (A_test A_train^T + bias_c).

    The first checkpoint writes S directly. The later ones reuse two [T,N]
    buffers and fold into S with one fused addcmul_. lr is folded into J_test,
    which is only [T,K].
    """
    c0 = ckpts[0]
    S = torch.mm(c0["j_test"] * c0["lr"], c0["j_train"].t())
    S.mul_(_add_bias(c0, torch.mm(c0["a_test"], c0["a_train"].t())))
    if len(ckpts) > 1:
        buf_j = torch.empty_like(S)
        buf_a = torch.empty_like(S)
        for c in ckpts[1:]:
            torch.mm(c["j_test"] * c["lr"], c["j_train"].t(), out=buf_j)
            torch.mm(c["a_test"], c["a_train"].t(), out=buf_a)
            S.addcmul_(buf_j, _add_bias(c, buf_a))
    return S


def scores_block(ckpts, lo, hi, buf_j, buf_a, out):
    """Same as scores_full but only for train rows [lo, hi), written into `out`."""
    for i, c in enumerate(ckpts):
        jt = c["j_test"] * c["lr"]
        if i == 0:
            torch.mm(jt, c["j_train"][lo:hi].t(), out=out)
            torch.mm(c["a_test"], c["a_train"][lo:hi].t(), out=buf_a)
            out.mul_(_add_bias(c, buf_a))
        else:
            torch.mm(jt, c["j_train"][lo:hi].t(), out=buf_j)
            torch.mm(c["a_test"], c["a_train"][lo:hi].t(), out=buf_a)
            out.addcmul_(buf_j, _add_bias(c, buf_a))
    return out


def topk_full(ckpts, k):
    S = scores_full(ckpts)
    p_val, p_idx = torch.topk(S, k, dim=1)
    o_val, o_idx = torch.topk(S, k, dim=1, largest=False)
    return p_idx, p_val, o_idx, o_val


def topk_blocked(ckpts, k, block):
    n = ckpts[0]["a_train"].shape[0]
    t = ckpts[0]["a_test"].shape[0]
    p_val = p_idx = o_val = o_idx = None
    bj = torch.empty(t, block)
    ba = torch.empty(t, block)
    bo = torch.empty(t, block)
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        w = hi - lo
        out = scores_block(ckpts, lo, hi, bj[:, :w], ba[:, :w], bo[:, :w])
        kk = min(k, w)
        bpv, bpi = torch.topk(out, kk, dim=1)
        bov, boi = torch.topk(out, kk, dim=1, largest=False)
        bpi += lo
        boi += lo
        if p_val is None:
            p_val, p_idx, o_val, o_idx = bpv, bpi, bov, boi
        else:
            cv = torch.cat([p_val, bpv], 1)
            ci = torch.cat([p_idx, bpi], 1)
            p_val, sel = torch.topk(cv, min(k, cv.shape[1]), dim=1)
            p_idx = torch.gather(ci, 1, sel)
            cv = torch.cat([o_val, bov], 1)
            ci = torch.cat([o_idx, boi], 1)
            o_val, sel = torch.topk(cv, min(k, cv.shape[1]), dim=1, largest=False)
            o_idx = torch.gather(ci, 1, sel)
    return p_idx, p_val, o_idx, o_val


def self_influence(ckpts):
    s = None
    for c in ckpts:
        jj = c["j_train"].square().sum(1)
        aa = _add_bias(c, c["a_train"].square().sum(1))
        if s is None:
            s = jj.mul_(aa).mul_(c["lr"])
        else:
            s.addcmul_(jj, aa, value=c["lr"])
    return s


def self_influence_norm(ckpts):
    """self_influence through torch.linalg.vector_norm (a fused reduction, no [N, D]
    temporary as square().sum(1) makes); tracincp mode times both and keeps the faster."""
    s = None
    for c in ckpts:
        jj = torch.linalg.vector_norm(c["j_train"], dim=1).square_()
        aa = _add_bias(c, torch.linalg.vector_norm(c["a_train"], dim=1).square_())
        if s is None:
            s = jj.mul_(aa).mul_(c["lr"])
        else:
            s.addcmul_(jj, aa, value=c["lr"])
    return s


# --------------------------------------------------------------------------- parity
def grams_only(terms, which):
    """Breakdown (tracincp mode): only the [T,N] GEMMs of one side, `which` = "a" (input
    grams A_test A_train^T) or "j" (gradient grams), into one reused buffer."""
    c0 = terms[0]
    buf = torch.empty(c0["a_test"].shape[0], c0["a_train"].shape[0])
    for c in terms:
        torch.mm(c[f"{which}_test"], c[f"{which}_train"].t(), out=buf)
    return buf


def check_against(path, block):
    """Recomputes infl's TracInCP results in FILE (tracincp_parity example) with torch."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
        x = {key: f.get_tensor(key) for key in f.keys()}
    n, t, C, L, k = (int(meta[key]) for key in ("n", "t", "checkpoints", "layers", "k"))
    terms = [
        dict(
            a_train=x[f"c{c}.l{l}.a_train"],
            j_train=x[f"c{c}.l{l}.g_train"],
            a_test=x[f"c{c}.l{l}.a_test"],
            j_test=x[f"c{c}.l{l}.g_test"],
            lr=float(x["lr"][c]),
            bias=1.0,
        )
        for c in range(C)
        for l in range(L)
    ]
    print(f"check-against {path}: N={n} T={t} C={C} layers={L} k={k}")
    # f64 reference, to see which side is closer to the exact value
    ref = scores_full([{**c, **{m: c[m].double() for m in ("a_train", "a_test", "j_train", "j_test")}}
                       for c in terms])
    torch_s = scores_full(terms)
    infl_s = x["infl.scores"]
    scale = ref.abs().max().item()

    def rel(a, b):
        return (a.double() - b.double()).abs().max().item() / scale

    report = {
        "scores infl vs torch": rel(infl_s, torch_s),
        "scores infl vs f64": rel(infl_s, ref),
        "scores torch vs f64": rel(torch_s, ref),
    }
    f = topk_full(terms, k)
    b = topk_blocked(terms, k, block)
    for variant, (p_idx, p_val, o_idx, o_val) in (("full", f), ("blocked", b)):
        report[f"top-k proponent values infl vs torch {variant}"] = rel(x["infl.proponents.values"], p_val)
        report[f"top-k opponent values infl vs torch {variant}"] = rel(x["infl.opponents.values"], o_val)
        same_p = (x["infl.proponents.indices"] == p_idx).double().mean().item()
        same_o = (x["infl.opponents.indices"] == o_idx).double().mean().item()
        report[f"top-k indices equal (fraction) {variant}"] = min(same_p, same_o)
    torch_self = self_influence(terms)
    torch_self_norm = self_influence_norm(terms)
    self_ref = self_influence([{**c, "a_train": c["a_train"].double(), "j_train": c["j_train"].double()}
                               for c in terms])
    self_scale = self_ref.abs().max().item()
    report["self infl vs torch"] = (x["infl.self"].double() - torch_self.double()).abs().max().item() / self_scale
    report["self infl vs torch (vector_norm)"] = (
        (x["infl.self"].double() - torch_self_norm.double()).abs().max().item() / self_scale
    )
    report["self infl vs f64"] = (x["infl.self"].double() - self_ref).abs().max().item() / self_scale
    for key, v in report.items():
        print(f"  {key:<45} {v:.3e}")
    ok = all(
        v <= 1e-5 for key, v in report.items() if "fraction" not in key
    ) and all(v == 1.0 for key, v in report.items() if "fraction" in key)
    print("parity: OK (max |diff| / max |f64 reference| <= 1e-5, same top-k indices)" if ok
          else "parity: FAILED")
    return ok


# --------------------------------------------------------------------------- timing
def bench(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = fn()
        times.append(time.perf_counter() - t0)
        del r
    return times


def summarize(times, flops):
    med = statistics.median(times)
    return {
        "median_s": med,
        "min_s": min(times),
        "max_s": max(times),
        "times_s": times,
        "flops": flops,
        "gflops": flops / med / 1e9,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50000, help="train examples")
    ap.add_argument("--t", type=int, default=1000, help="test examples")
    ap.add_argument("--d", type=int, default=128, help="penultimate feature dim")
    ap.add_argument("--k", type=int, default=10, help="output dim (classes)")
    ap.add_argument("--checkpoints", type=int, default=6)
    ap.add_argument("--topk", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--block", type=int, default=8192, help="train block for blocked top-k")
    ap.add_argument("--modes", default="topk,scores,self",
                    help="comma list of topk,scores,self,sgemm,tracincp")
    ap.add_argument("--sgemm", action="store_true", help="also measure SGEMM 4096x512 @ 512x4096")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write results here")
    ap.add_argument("--cp-n", type=int, default=20000, help="tracincp: train examples")
    ap.add_argument("--cp-t", type=int, default=500, help="tracincp: test examples")
    ap.add_argument("--cp-checkpoints", type=int, default=3, help="tracincp: checkpoints")
    ap.add_argument("--cp-layers", default="784x256,256x128,128x10",
                    help="tracincp: layers as DxK (inputs x outputs), comma-separated")
    ap.add_argument("--check-against", default=None, metavar="FILE",
                    help="compare with infl's results in FILE (tracincp_parity example), then exit")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.check_against:
        return {"parity_ok": check_against(args.check_against, args.block)}

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if args.sgemm and "sgemm" not in modes:
        modes.append("sgemm")
    for m in modes:
        if m not in ("topk", "scores", "self", "sgemm", "tracincp"):
            ap.error(f"unknown mode {m!r}")

    torch.manual_seed(args.seed)
    N, T, D, K, C = args.n, args.t, args.d, args.k, args.checkpoints

    results = {
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")(),
        "params": {
            "n": N, "t": T, "d": D, "k": K, "checkpoints": C,
            "topk": args.topk, "repeats": args.repeats, "block": args.block,
            "seed": args.seed,
        },
    }

    need_data = any(m in ("topk", "scores", "self") for m in modes)
    ckpts = make_data(N, T, D, K, C, args.seed) if need_data else None
    pair_flops = C * (2 * T * N * D + 2 * T * N * K + 3 * T * N)
    self_flops = C * (2 * N * (D + K) + 3 * N)

    cp_layers = [tuple(int(v) for v in layer.split("x")) for layer in args.cp_layers.split(",")]
    cpN, cpT, cpC = args.cp_n, args.cp_t, args.cp_checkpoints
    results["params"]["tracincp"] = {
        "n": cpN, "t": cpT, "checkpoints": cpC, "layers": [list(x) for x in cp_layers],
    }
    cp_pair_flops = cpC * sum(2 * cpT * cpN * d + 2 * cpT * cpN * k + 3 * cpT * cpN for d, k in cp_layers)
    cp_self_flops = cpC * sum(2 * cpN * (d + k) + 3 * cpN for d, k in cp_layers)

    rows = []
    for mode in modes:
        if mode == "scores":
            r = summarize(bench(lambda: scores_full(ckpts), args.repeats), pair_flops)
            results["scores"] = r
            rows.append(("scores", "full", r))
        elif mode == "topk":
            # correctness: blocked == full (compare scores; indices may differ on ties)
            f = topk_full(ckpts, args.topk)
            b = topk_blocked(ckpts, args.topk, args.block)
            for x, y in ((f[1], b[1]), (f[3], b[3])):
                assert torch.allclose(x, y, rtol=1e-4, atol=1e-3 * x.abs().max().item()), "blocked != full"
            del f, b
            rf = summarize(bench(lambda: topk_full(ckpts, args.topk), args.repeats), pair_flops)
            rb = summarize(
                bench(lambda: topk_blocked(ckpts, args.topk, args.block), args.repeats), pair_flops
            )
            best_name, best = ("full", rf) if rf["median_s"] <= rb["median_s"] else ("blocked", rb)
            results["topk"] = {**best, "variant": best_name, "full": rf, "blocked": rb}
            rows.append(("topk", "full", rf))
            rows.append(("topk", f"blocked({args.block})", rb))
        elif mode == "self":
            r = summarize(bench(lambda: self_influence(ckpts), args.repeats), self_flops)
            results["self"] = r
            rows.append(("self", "-", r))
        elif mode == "tracincp":
            terms = make_tracincp_data(cpN, cpT, cp_layers, cpC, args.seed)
            f = topk_full(terms, args.topk)
            b = topk_blocked(terms, args.topk, args.block)
            for x, y in ((f[1], b[1]), (f[3], b[3])):
                assert torch.allclose(x, y, rtol=1e-4, atol=1e-3 * x.abs().max().item()), "blocked != full"
            del f, b
            rs = summarize(bench(lambda: scores_full(terms), args.repeats), cp_pair_flops)
            rf = summarize(bench(lambda: topk_full(terms, args.topk), args.repeats), cp_pair_flops)
            rb = summarize(
                bench(lambda: topk_blocked(terms, args.topk, args.block), args.repeats), cp_pair_flops
            )
            rss = summarize(bench(lambda: self_influence(terms), args.repeats), cp_self_flops)
            rsn = summarize(bench(lambda: self_influence_norm(terms), args.repeats), cp_self_flops)
            self_name, rself = ("square-sum", rss) if rss["median_s"] <= rsn["median_s"] else ("vector_norm", rsn)
            rself = {**rself, "variant": self_name, "square-sum": rss, "vector_norm": rsn}
            best_name, best = ("full", rf) if rf["median_s"] <= rb["median_s"] else ("blocked", rb)
            # breakdown of the scores' cost: each side's GEMMs alone (their own FLOPs)
            a_flops = cpC * sum(2 * cpT * cpN * d for d, _ in cp_layers)
            j_flops = cpC * sum(2 * cpT * cpN * k for _, k in cp_layers)
            ra = summarize(bench(lambda: grams_only(terms, "a"), args.repeats), a_flops)
            rj = summarize(bench(lambda: grams_only(terms, "j"), args.repeats), j_flops)
            results["tracincp"] = {
                "input_grams_only": ra,
                "gradient_grams_only": rj,
                "scores": rs,
                "topk": {**best, "variant": best_name, "full": rf, "blocked": rb},
                "self": rself,
            }
            rows.append(("cp-scores", "full", rs))
            rows.append(("cp-topk", "full", rf))
            rows.append(("cp-topk", f"blocked({args.block})", rb))
            rows.append(("cp-grams", "inputs A.A^T only", ra))
            rows.append(("cp-grams", "gradients G.G^T only", rj))
            rows.append(("cp-self", "square().sum(1)", rss))
            rows.append(("cp-self", "vector_norm", rsn))
            del terms
        elif mode == "sgemm":
            M, KK, NN = 4096, 512, 4096
            g = torch.Generator().manual_seed(args.seed + 1)
            a = torch.randn(M, KK, generator=g)
            bm = torch.randn(KK, NN, generator=g)
            out = torch.empty(M, NN)
            r = summarize(
                bench(lambda: torch.mm(a, bm, out=out), args.repeats), 2 * M * KK * NN
            )
            r["shape"] = [M, KK, NN]
            results["sgemm"] = r
            rows.append(("sgemm", "4096x512@512x4096", r))

    # ---------------------------------------------------------------- report
    fast = f"N={N} T={T} D={D} K={K} C={C} " if need_data else ""
    print(
        f"torch {torch.__version__}  threads={torch.get_num_threads()}  "
        f"{fast}topk={args.topk} repeats={args.repeats}"
    )
    hdr = f"{'mode':<9} {'variant':<20} {'median_s':>10} {'min_s':>10} {'GFLOP/s':>9}"
    print(hdr)
    print("-" * len(hdr))
    for mode, var, r in rows:
        print(f"{mode:<9} {var:<20} {r['median_s']:>10.4f} {r['min_s']:>10.4f} {r['gflops']:>9.2f}")
    if "tracincp" in results:
        print(
            f"tracincp: N={cpN} T={cpT} C={cpC} layers={args.cp_layers}  "
            f"topk peer = {results['tracincp']['topk']['variant']}  "
            f"self peer = {results['tracincp']['self']['variant']}"
        )
    if "topk" in results:
        print(f"topk peer = {results['topk']['variant']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    r = main()
    sys.exit(0 if r is not None and r.get("parity_ok", True) else 1)
