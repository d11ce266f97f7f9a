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

Each mode runs once to warm up, then `repeats` more times timed with
time.perf_counter. We report the median. GFLOP/s are computed with these
conventions:
  scores/topk: checkpoints * (2*T*N*D + 2*T*N*K + 3*T*N)
  self       : checkpoints * (2*N*(D+K) + 3*N)
  sgemm      : 2*M*K*N

Example:
  /work/venv/bin/python benches/torch_tracin.py --n 50000 --t 1000 --d 128 \\
      --k 10 --checkpoints 6 --topk 10 --threads 2 --repeats 5 \\
      --modes topk,scores,self --sgemm --json out.json
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


# --------------------------------------------------------------------------- kernels
def scores_full(ckpts):
    """S[T,N] = sum_c lr_c (J_test J_train^T) * (A_test A_train^T).

    The first checkpoint writes S directly. The later ones reuse two [T,N]
    buffers and fold into S with one fused addcmul_. lr is folded into J_test,
    which is only [T,K].
    """
    c0 = ckpts[0]
    S = torch.mm(c0["j_test"] * c0["lr"], c0["j_train"].t())
    S.mul_(torch.mm(c0["a_test"], c0["a_train"].t()))
    if len(ckpts) > 1:
        buf_j = torch.empty_like(S)
        buf_a = torch.empty_like(S)
        for c in ckpts[1:]:
            torch.mm(c["j_test"] * c["lr"], c["j_train"].t(), out=buf_j)
            torch.mm(c["a_test"], c["a_train"].t(), out=buf_a)
            S.addcmul_(buf_j, buf_a)
    return S


def scores_block(ckpts, lo, hi, buf_j, buf_a, out):
    """Same as scores_full but only for train rows [lo, hi), written into `out`."""
    for i, c in enumerate(ckpts):
        jt = c["j_test"] * c["lr"]
        if i == 0:
            torch.mm(jt, c["j_train"][lo:hi].t(), out=out)
            torch.mm(c["a_test"], c["a_train"][lo:hi].t(), out=buf_a)
            out.mul_(buf_a)
        else:
            torch.mm(jt, c["j_train"][lo:hi].t(), out=buf_j)
            torch.mm(c["a_test"], c["a_train"][lo:hi].t(), out=buf_a)
            out.addcmul_(buf_j, buf_a)
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
        aa = c["a_train"].square().sum(1)
        if s is None:
            s = jj.mul_(aa).mul_(c["lr"])
        else:
            s.addcmul_(jj, aa, value=c["lr"])
    return s


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
    ap.add_argument("--modes", default="topk,scores,self", help="comma list of topk,scores,self,sgemm")
    ap.add_argument("--sgemm", action="store_true", help="also measure SGEMM 4096x512 @ 512x4096")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write results here")
    args = ap.parse_args(argv)

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if args.sgemm and "sgemm" not in modes:
        modes.append("sgemm")
    for m in modes:
        if m not in ("topk", "scores", "self", "sgemm"):
            ap.error(f"unknown mode {m!r}")

    torch.set_num_threads(args.threads)
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
    print(
        f"torch {torch.__version__}  threads={torch.get_num_threads()}  "
        f"N={N} T={T} D={D} K={K} C={C} topk={args.topk} repeats={args.repeats}"
    )
    hdr = f"{'mode':<8} {'variant':<20} {'median_s':>10} {'min_s':>10} {'GFLOP/s':>9}"
    print(hdr)
    print("-" * len(hdr))
    for mode, var, r in rows:
        print(f"{mode:<8} {var:<20} {r['median_s']:>10.4f} {r['min_s']:>10.4f} {r['gflops']:>9.2f}")
    if "topk" in results:
        print(f"topk peer = {results['topk']['variant']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
