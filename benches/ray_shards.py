"""Sharded top-k through Ray vs one process (BENCHMARKS.md, "Beyond one machine").

Writes a synthetic run (N training rows, D = 128 features, K = 10 classes, 6 checkpoints,
T test rows; seeded) under --dir, then times in one Python process with the `infl`
package (a release build: `pip install ./crates/infl-py`):
  - `infl.topk(run, 10)`: one process, every core;
  - `infl.ray.topk(run, 10, shards=8)` on a one-machine Ray cluster already started
    (`ray.init(num_cpus=CORES)`): 8 shard tasks of one core each plus the tree merge;
  - one shard alone (`infl.topk(..., shard=(1, 8), threads=1)`): per-shard throughput.
Checks that the Ray result equals the single run. Prints one JSON object.

    python benches/ray_shards.py --dir target/bench-data --train 1000000 --test 200
"""

import argparse
import json
import os
import platform
import struct
import subprocess
import time

import numpy as np


def save(path, tensors, metadata=None):
    """A safetensors file from numpy arrays (no dependency beyond numpy)."""
    header, offset, blobs = {}, 0, []
    for name, a in tensors.items():
        a = np.ascontiguousarray(a)
        dtype = {np.float32: "F32", np.int64: "I64"}[a.dtype.type]
        header[name] = {"dtype": dtype, "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        blobs.append(a)
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for a in blobs:
            a.tofile(f)


def write_run(d, n, t, dim=128, k=10, checkpoints=6):
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(0)
    y_train, y_test = rng.integers(0, k, n), rng.integers(0, k, t)
    for c in range(1, checkpoints + 1):
        save(f"{d}/checkpoint-{c}.safetensors",
             {"fc.weight": (rng.standard_normal((k, dim), dtype=np.float32) * 0.1),
              "fc.bias": rng.standard_normal(k, dtype=np.float32) * 0.1},
             {"learning_rate": str(0.1 / c)})
        save(f"{d}/checkpoint-{c}.train.safetensors",
             {"features": rng.standard_normal((n, dim), dtype=np.float32), "labels": y_train})
        save(f"{d}/checkpoint-{c}.test.safetensors",
             {"features": rng.standard_normal((t, dim), dtype=np.float32), "labels": y_test})


def timed(what, f, repeat):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t0)
    print(f"{what}: {times}", flush=True)
    return float(np.median(times)), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="target/bench-data")
    ap.add_argument("--train", type=int, default=1_000_000)
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    run = os.path.join(a.dir, "run")
    if not os.path.exists(os.path.join(run, "checkpoint-6.test.safetensors")):
        write_run(run, a.train, a.test)
    import infl
    import infl.ray
    import ray

    cores = os.cpu_count()
    one, whole = timed("one process", lambda: infl.topk(run, 10, layer="fc"), a.repeat)
    shard, _ = timed("one shard, one thread",
                     lambda: infl.topk(run, 10, layer="fc", shard=(1, a.shards), threads=1),
                     a.repeat)
    t0 = time.perf_counter()
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    start = time.perf_counter() - t0
    infl.ray.topk(run, 10, layer="fc", shards=a.shards)  # warm the workers
    via_ray, got = timed("ray", lambda: infl.ray.topk(run, 10, layer="fc", shards=a.shards),
                         a.repeat)
    ray.shutdown()
    for name in ["proponents", "proponent_scores", "opponents", "opponent_scores"]:
        assert np.array_equal(getattr(got, name), getattr(whole, name)), name
    cpu = subprocess.run(["sh", "-c", "lscpu | sed -n 's/Model name: *//p'"],
                         capture_output=True, text=True).stdout.strip()
    rows = a.train // a.shards
    print(json.dumps({
        "cpu": cpu or platform.processor(), "cores": cores, "train": a.train,
        "test": a.test, "shards": a.shards, "one_process_s": one, "ray_s": via_ray,
        "ray_overhead": via_ray / one - 1, "ray_start_s": start,
        "one_shard_one_thread_s": shard,
        "pairs_per_s_per_core": rows * a.test / shard,
        "lists_bytes_per_shard": a.test * 10 * 2 * (8 + 8 + 4),
    }))


if __name__ == "__main__":
    main()
