"""Sharded attribution on a Ray cluster: ``infl.ray.topk(run, k, shards=N)``.

Each Ray task scores one shard of the training rows (``infl.topk(..., shard=(i, N))``):
it memory-maps the run's files by path on its own node, so no array goes through the
object store, only each shard's ``[T, k]`` lists come back; lists are then merged in a
tree (pairs of results merged in tasks, ``infl.merge_topk``), so no node holds more than
two shards' lists. The result equals ``infl.topk(run, k)`` exactly.

The same call runs on a laptop (``ray.init()``) and on a cluster
(``ray.init(address=...)``): the run's path must be readable on every node (a shared
file system, or the same path on each). With ``num_gpus`` a task that Ray gave a GPU
(``ray.get_gpu_ids()`` not empty) uses ``backend="gpu"`` on that GPU: Vulkan does not read
the ``CUDA_VISIBLE_DEVICES`` Ray sets, so the task sets ``INFL_GPU_INDEX`` to its first
GPU id, and infl opens the physical GPU of that index in PCI bus order — CUDA's numbering
under ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (set it on the nodes when CUDA's default
fastest-first order would differ, i.e. on nodes with mixed cards).

Ray is imported when a function here is called, never by ``import infl``.
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence

import infl


def _ray():
    try:
        import ray
    except ImportError as e:  # pragma: no cover - exercised without ray installed
        raise ImportError("infl.ray needs Ray: pip install 'ray>=2.60'") from e
    return ray


def _gpu_settings(kwargs: dict) -> dict:
    """In a task Ray gave a GPU: ``backend="gpu"`` and ``INFL_GPU_INDEX`` set to its id."""
    ids = _ray().get_gpu_ids()
    if not ids:
        return kwargs
    os.environ["INFL_GPU_INDEX"] = str(ids[0])
    return dict(kwargs, backend="gpu")


def _shard_task(run, k, i, n, kwargs, use_gpu):
    if use_gpu:
        kwargs = _gpu_settings(kwargs)
    return infl.topk(run, k, shard=(i, n), **kwargs)


def _merge_task(k, *parts):
    return infl.merge_topk(parts, k)


def topk(run, k: int = 10, *, shards: Optional[int] = None, num_cpus: float = 1,
         num_gpus: float = 0, fan_in: int = 2, **kwargs) -> "infl.TopK":
    """Top-k proponents and opponents of a run on disk, in ``shards`` Ray tasks.

    ``shards`` defaults to the cluster's CPUs (at most the number of training rows);
    ``num_cpus`` / ``num_gpus`` are each task's resources (its ``threads`` default to its
    CPUs); ``fan_in`` results are merged per
    merge task. Other arguments are :func:`infl.topk`'s (``layer``, ``method``,
    settings). Call ``ray.init(...)`` first (Ray starts a local cluster otherwise).
    """
    ray = _ray()
    if not ray.is_initialized():
        ray.init()
    run = os.fspath(run)
    # A task computes on the cores Ray gave it, not on every core of its node.
    kwargs.setdefault("threads", max(1, int(num_cpus)))
    n = infl.training_examples(run, layer=kwargs.get("layer"), layers=kwargs.get("layers"))
    if shards is None:
        shards = int(ray.cluster_resources().get("CPU", 1))
    shards = max(1, min(int(shards), n))
    if fan_in < 2:
        raise infl.InflError(f"fan_in: expected at least 2, found {fan_in}")
    shard = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(_shard_task)
    merge = ray.remote(num_cpus=num_cpus)(_merge_task)
    refs: List = [shard.remote(run, k, i, shards, kwargs, num_gpus > 0)
                  for i in range(1, shards + 1)]
    while len(refs) > 1:
        refs = [merge.remote(k, *refs[j:j + fan_in]) if len(refs[j:j + fan_in]) > 1
                else refs[j] for j in range(0, len(refs), fan_in)]
    return ray.get(refs[0])
