#!/usr/bin/env python3
"""EK-FAC influence, fit + pairwise scores, with Kronfluence on an infl-nn MNIST MLP
(BENCHMARKS.md, "EK-FAC vs Kronfluence"): the peer of
``infl scores --method influence --factors DIR --solver ekfac``.

Input: a factor folder written by ``infl demo --export-factors`` (the MLP 784-256-128-10 of
infl-nn, its checkpoints beside the folder). The last checkpoint's weights are loaded into
the same ``nn.Sequential`` of ``nn.Linear`` layers; the examples are the factor files'
``fc1.a`` (fc1's input is the model's input) and ``labels``, so both tools see the same
numbers. Kronfluence 1.0.1 settings, its defaults except where noted:

* ``FactorArguments(strategy="ekfac", use_empirical_fisher=True)`` (noted: the true labels,
  as infl's default ``--curvature`` on factor files, the empirical Fisher; the default
  samples labels, which costs the same);
* ``ScoreArguments()`` (``damping_factor=1e-8``, infl's default with
  ``--convention kronfluence``), float32 scores;
* each example's own summed cross-entropy (the factor files' ``g``);
* ``per_device_batch_size`` / train batch ``--batch`` (default 512), all queries in one
  batch, ``torch.set_num_threads(--threads)``, CPU.

Times ``fit_all_factors`` and ``compute_pairwise_scores`` (wall clock, one run; the
factors and scores Kronfluence writes to ``--workdir`` included, as it always writes
them). With ``--infl-scores FILE`` (infl's ``scores`` output for the same factors) also
prints the agreement: relative Frobenius error and the mean per-test Spearman correlation.
Prints one JSON object.

    target/peers-venv/bin/python benches/kronfluence_ekfac.py --factors RUN/factors \\
        --checkpoint RUN/epoch-5.safetensors --threads 2 [--infl-scores scores.safetensors]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import tempfile
import time
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from torch.utils.data import TensorDataset

import kronfluence
from kronfluence.analyzer import Analyzer, prepare_model
from kronfluence.arguments import FactorArguments, ScoreArguments
from kronfluence.task import Task

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)


class SummedCrossEntropy(Task):
    """Each example's own cross-entropy, summed over the batch (the factor files' g)."""

    def compute_train_loss(self, batch, model, sample=False):
        x, y = batch
        logits = model(x)
        if sample:
            with torch.no_grad():
                y = torch.multinomial(F.softmax(logits.detach(), -1), 1).flatten()
        return F.cross_entropy(logits, y, reduction="sum")

    def compute_measurement(self, batch, model):
        return self.compute_train_loss(batch, model)


def last_file(folder: str, split: str) -> str:
    """The factor file of the last checkpoint (natural order) for `split`."""
    names = [f for f in os.listdir(folder) if f.endswith(f".{split}.safetensors")]
    key = lambda f: [int(t) if t.isdigit() else t for t in f.replace("-", ".").split(".")]
    return os.path.join(folder, sorted(names, key=key)[-1])


def examples(path: str) -> TensorDataset:
    with safe_open(path, "pt") as f:
        return TensorDataset(f.get_tensor("fc1.a").float(), f.get_tensor("labels").long())


def model_from(checkpoint: str) -> nn.Module:
    with safe_open(checkpoint, "pt") as f:
        sizes = [int(s) for s in f.metadata()["sizes"].split(",")]
        layers = []
        for i in range(len(sizes) - 1):
            layers += [nn.Linear(sizes[i], sizes[i + 1])]
            if i < len(sizes) - 2:
                layers += [nn.ReLU()]
        names = [f"fc{i + 1}" for i in range(len(sizes) - 1)]
        model = nn.Sequential()
        j = 0
        for m in layers:
            if isinstance(m, nn.Linear):
                m.weight.data = f.get_tensor(f"{names[j]}.weight").float()
                m.bias.data = f.get_tensor(f"{names[j]}.bias").float()
                model.add_module(names[j], m)
                j += 1
            else:
                model.add_module(f"relu{j}", m)
    return model.eval()


def spearman_rows(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over rows of Spearman's correlation (ranks by argsort; ties are negligible)."""
    def ranks(x):
        r = torch.empty_like(x, dtype=torch.float64)
        r.scatter_(1, x.argsort(1), torch.arange(x.shape[1], dtype=torch.float64).expand(x.shape[0], -1).contiguous())
        return r - r.mean(1, keepdim=True)
    ra, rb = ranks(a), ranks(b)
    return float(((ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1))).mean())


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name"))
    except Exception:
        return platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--factors", required=True)
    ap.add_argument("--checkpoint", required=True, help="the last checkpoint (infl-nn safetensors)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--infl-scores", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    load0 = time.perf_counter()
    train = examples(last_file(args.factors, "train"))
    test = examples(last_file(args.factors, "test"))
    model = model_from(args.checkpoint)
    load = time.perf_counter() - load0

    workdir = args.workdir or tempfile.mkdtemp(prefix="kronfluence-bench-")
    task = SummedCrossEntropy()
    model = prepare_model(model, task)
    analyzer = Analyzer(analysis_name="bench", model=model, task=task, cpu=True,
                        disable_tqdm=True, output_dir=workdir)
    t0 = time.perf_counter()
    analyzer.fit_all_factors(
        factors_name="ekfac", dataset=train, per_device_batch_size=args.batch,
        factor_args=FactorArguments(strategy="ekfac", use_empirical_fisher=True),
        overwrite_output_dir=True)
    t1 = time.perf_counter()
    analyzer.compute_pairwise_scores(
        scores_name="ekfac_scores", factors_name="ekfac", query_dataset=test,
        train_dataset=train, per_device_query_batch_size=len(test),
        per_device_train_batch_size=args.batch, score_args=ScoreArguments(),
        overwrite_output_dir=True)
    t2 = time.perf_counter()
    scores = analyzer.load_pairwise_scores("ekfac_scores")["all_modules"].float()

    out = {
        "peer": f"kronfluence {kronfluence.__version__}, torch {torch.__version__}",
        "cpu": cpu_model(),
        "threads": args.threads,
        "train": len(train),
        "test": len(test),
        "load_s": round(load, 2),
        "fit_s": round(t1 - t0, 2),
        "scores_s": round(t2 - t1, 2),
        "fit_plus_scores_s": round(t2 - t0, 2),
    }
    if args.infl_scores:
        with safe_open(args.infl_scores, "pt") as f:
            mine = f.get_tensor("scores").float()
        diff = (mine.double() - scores.double()).norm() / scores.double().norm()
        out["infl_vs_kronfluence_relative_error"] = float(diff)
        out["infl_vs_kronfluence_spearman_mean"] = spearman_rows(mine, scores)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
