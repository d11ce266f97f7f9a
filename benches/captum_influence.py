#!/usr/bin/env python3
"""Influence functions on the final layer: infl vs Captum's NaiveInfluenceFunction, one run.

Same data, same threads, same math (the summed Hessian of the final layer's
cross-entropy with respect to its weight and bias, plus `hessian_reg` on the diagonal,
every eigenpair kept): Captum 0.9.0 `NaiveInfluenceFunction(layers=["fc3"],
projection_dim=None)` in float32 — how a Captum user runs it — against
`infl scores --method influence --convention captum --include-bias --damping REG`, and
`infl fit` then `infl scores --hessian` (the fit reused). Not timed: loading the files
into torch. Timed: Captum's constructor (it assembles and eigendecomposes the Hessian)
and its `influence()` call; infl's whole processes (`time.perf_counter` around
`subprocess.run`, so start-up and file reading are included on infl's side).

    target/peers-venv/bin/python benches/captum_influence.py --run RUN --checkpoint epoch-15 \\
        --infl target/release/infl --test 500 --threads 2

RUN is an `infl demo` run folder (e.g. the full-MNIST run of QUALITY.md); the last
checkpoint's `fc3` is used. Prints a markdown table and the agreement of the scores
(Captum float32 vs infl f64 solves: MEASURED.md expects ~1e-3 relative on a softmax head).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
import warnings

import numpy as np
import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.numpy import load_file
from torch.utils.data import TensorDataset

from captum.influence import NaiveInfluenceFunction

warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")


def tensors(path: str) -> dict:
    with safe_open(path, framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True)
    p.add_argument("--checkpoint", required=True, help="the run's last checkpoint name")
    p.add_argument("--layer", default="fc3")
    p.add_argument("--infl", default="target/release/infl")
    p.add_argument("--test", type=int, default=500, help="test examples (the first ones)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reg", type=float, default=1e-3, help="hessian_reg = infl --damping")
    p.add_argument("--batch", type=int, default=4096, help="Captum's batch size")
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    state = tensors(os.path.join(a.run, f"{a.checkpoint}.safetensors"))
    train = tensors(os.path.join(a.run, f"{a.checkpoint}.train.safetensors"))
    test = tensors(os.path.join(a.run, f"{a.checkpoint}.test.safetensors"))
    w, b = state[f"{a.layer}.weight"], state[f"{a.layer}.bias"]
    model = nn.Sequential()
    model.add_module(a.layer, nn.Linear(w.shape[1], w.shape[0]))
    getattr(model, a.layer).weight.data.copy_(w)
    getattr(model, a.layer).bias.data.copy_(b)
    x, y = train["features"], train["labels"]
    xt, yt = test["features"][: a.test], test["labels"][: a.test]
    n, t = len(x), len(xt)

    start = time.perf_counter()
    fn = NaiveInfluenceFunction(
        model,
        TensorDataset(x, y),
        checkpoint="unused",
        checkpoints_load_func=lambda _m, _p: 1.0,
        layers=[a.layer],
        loss_fn=nn.CrossEntropyLoss(reduction="sum"),
        batch_size=a.batch,
        sample_wise_grads_per_batch=True,
        projection_dim=None,
        hessian_reg=a.reg,
        hessian_inverse_tol=1e-9,
    )
    captum_fit = time.perf_counter() - start
    start = time.perf_counter()
    captum_scores = fn.influence((xt, yt)).numpy()
    captum_score = time.perf_counter() - start

    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    with tempfile.TemporaryDirectory() as tmp:
        # The infl run: the same checkpoint as the last one, the test split cut to --test.
        common = [
            a.infl, "-q", "--backend", "cpu", "--threads", str(a.threads),
        ]
        src = ["--run", a.run, "--layer", a.layer, "--method", "influence",
               "--include-bias", "--convention", "captum", "--damping", str(a.reg)]

        def timed(args: list[str]) -> float:
            s = time.perf_counter()
            subprocess.run(common + args, check=True, env=env)
            return time.perf_counter() - s

        out = os.path.join(tmp, "scores.safetensors")
        one_shot = timed(["scores", *src, "-o", out])
        hessian = os.path.join(tmp, "hessian.safetensors")
        fit = timed(["fit", "--run", a.run, "--layer", a.layer, "--include-bias", "-o", hessian])
        reused = timed(["scores", *src, "--hessian", hessian, "-o", out])
        infl_scores = load_file(out)["scores"]
    # infl scores every test example of the run; compare the first --test.
    infl_scores = infl_scores[:t]
    rel = np.abs(infl_scores - captum_scores).max() / np.abs(captum_scores).max()
    print(f"N = {n} train, T = {t} test, {w.shape[0]} x ({w.shape[1]} + 1) parameters, "
          f"{a.threads} threads, hessian_reg = damping = {a.reg}\n")
    print("| step | Captum NaiveInfluenceFunction (f32) | infl | Captum / infl |")
    print("|---|---|---|---|")
    print(f"| fit + scores (one process) | {captum_fit + captum_score:.2f} s | {one_shot:.2f} s "
          f"| {(captum_fit + captum_score) / one_shot:.1f}x |")
    print(f"| fit (Captum: constructor; infl: `infl fit`) | {captum_fit:.2f} s | {fit:.2f} s | "
          f"{captum_fit / fit:.1f}x |")
    print(f"| scores from a fit (infl: `--hessian`, whole process) | {captum_score:.2f} s | "
          f"{reused:.2f} s | {captum_score / reused:.1f}x |")
    print(f"\nmax |infl - Captum| / max |Captum| = {rel:.2e}")


if __name__ == "__main__":
    main()
