"""infl: training-data attribution in Rust, for Python.

Which training examples made a model predict what it predicts, and which training labels
look wrong. The numbers are infl's (the same as the ``infl`` command's, bit for bit);
Captum's ``TracInCPFast`` is the reference they match.

Two ways in:

- a run on disk (the ``infl`` command's layout: ``NAME.safetensors`` checkpoints with
  ``NAME.train/test.safetensors`` features, or a folder of factor files), loaded by path and
  memory-mapped: :func:`topk`, :func:`scores`, :func:`self_influence`, each optionally on a
  shard ``(i, N)`` of the training rows (:func:`merge_topk` combines shards; ``infl.ray``
  fans them out over a Ray cluster);
- arrays in memory: :func:`tracin_fast` borrows C-contiguous ``float32`` numpy arrays
  without copying them (a torch tensor: ``tensor.numpy()`` or ``np.from_dlpack``).

The GIL is released while Rust computes. Bad input raises :class:`InflError` (a
``ValueError``) with the message the command-line tool prints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from . import _native
from ._native import InflError, methods, shard_rows, training_examples

__all__ = [
    "InflError",
    "TopK",
    "merge_topk",
    "methods",
    "scores",
    "self_influence",
    "shard_rows",
    "topk",
    "tracin_fast",
    "training_examples",
]
__version__ = _native.__version__

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class TopK:
    """Top-k proponents and opponents of every test example.

    ``proponents`` / ``opponents`` are training rows ``[T, k]`` (int64; rows of the whole
    training set, also for a shard's lists), best first (largest scores; most negative
    scores); ``*_ids`` their ``ids``; ``*_scores`` their scores (float32). Ties go to the
    lower row. ``rows`` is the range of training rows the lists were drawn from.
    """

    proponents: np.ndarray
    proponent_ids: np.ndarray
    proponent_scores: np.ndarray
    opponents: np.ndarray
    opponent_ids: np.ndarray
    opponent_scores: np.ndarray
    test_ids: np.ndarray
    k: int
    rows: Tuple[int, int]

    @classmethod
    def _from(cls, d: dict) -> "TopK":
        return cls(**{f: d[f] for f in cls.__dataclass_fields__ if f != "rows"},
                   rows=tuple(d.get("rows", (0, 0))))

    def _as_dict(self) -> dict:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


_INFLUENCE = ("solver", "damping", "convention", "curvature", "hessian")


def _settings(kw: dict) -> dict:
    allowed = {"loss", "reduction", "include_bias", "learning_rate", "projection_dim", "seed",
               "backend", "threads", *_INFLUENCE}
    unknown = set(kw) - allowed
    if unknown:
        raise TypeError(f"unexpected settings {sorted(unknown)}; expected some of {sorted(allowed)}")
    out = {k: v for k, v in kw.items() if k not in _INFLUENCE}
    influence = {k: kw[k] for k in _INFLUENCE if k in kw}
    if influence.get("hessian") is not None:
        influence["hessian"] = os.fspath(influence["hessian"])
    if influence:
        out["influence"] = influence
    return out


def topk(run: PathLike, k: int = 10, *, layer: Optional[str] = None,
         layers: Optional[Sequence[str]] = None, method: str = "tracincp-fast",
         shard: Optional[Tuple[int, int]] = None, **settings) -> TopK:
    """The ``k`` strongest proponents and opponents of every test example of a run on disk.

    ``run`` is a run folder or manifest (give the final ``layer``) or a folder of factor
    files (``method="tracincp"``, optional ``layers``). ``shard=(i, N)`` scores only shard
    ``i`` of ``N`` (1-based) of the training rows, as ``infl topk --shard i/N``: its lists
    hold at most ``k`` of its own rows, with global row indices. Settings: ``loss`` ("ce",
    "mse"), ``reduction`` ("sum", "mean"), ``include_bias``, ``learning_rate`` (for
    checkpoints without one), ``projection_dim`` and ``seed``
    (``method="tracincp-fast-rand-proj"``), ``backend`` ("cpu", "gpu", "auto"),
    ``threads``.

    ``method="influence"`` (influence functions, Koh & Liang; positive = helpful) takes
    ``solver`` ("exact", "cg", "lissa", "arnoldi", "kfac", "ekfac"; default: exact on a
    run's final layer, EK-FAC on factor files, CG there with a ``curvature``), ``damping``
    (a number, or "heuristic": 0.1 × the mean eigenvalue; default the convention's),
    ``convention`` ("kronfluence", the default: the mean Hessian; "captum": the summed one)
    and ``curvature`` on factor files ("fisher", "true-fisher", "gauss-newton", "hessian"),
    as ``infl topk --method influence``'s flags, each solver's knobs at the CLI's defaults;
    ``hessian``: the path of a curvature saved by ``infl fit`` (the final layer's Hessian,
    or on factor files a K-FAC/EK-FAC fit), as ``--hessian FILE``: no refit, and the way to
    score a ``shard`` with influence functions.
    """
    d = _native.topk(os.fspath(run), k, layer=layer, layers=_layers(layers), method=method,
                     shard=shard, **_settings(settings))
    return TopK._from(d)


def merge_topk(parts: Sequence[TopK], k: Optional[int] = None) -> TopK:
    """Merges top-k lists over disjoint training rows (shards, in any order and grouping)
    into the best ``k`` (default: the parts' ``k``): the lists one unsharded run gives."""
    if not parts:
        raise InflError("merge_topk: expected at least one part")
    k = parts[0].k if k is None else k
    return TopK._from(_native.merge_topk([p._as_dict() for p in parts], k))


def scores(run: PathLike, *, layer: Optional[str] = None,
           layers: Optional[Sequence[str]] = None, method: str = "tracincp-fast",
           shard: Optional[Tuple[int, int]] = None, **settings) -> np.ndarray:
    """The full ``[test, train]`` score matrix (float32) of a run on disk (a shard's
    columns with ``shard=(i, N)``). Arguments as :func:`topk`'s."""
    s, _, _ = _native.scores(os.fspath(run), layer=layer, layers=_layers(layers),
                             method=method, shard=shard, **_settings(settings))
    return s


def self_influence(run: PathLike, *, layer: Optional[str] = None,
                   layers: Optional[Sequence[str]] = None, method: str = "tracincp-fast",
                   shard: Optional[Tuple[int, int]] = None, **settings) -> np.ndarray:
    """Self-influence of every training example of a run on disk (float32 ``[N]``; a
    shard's rows with ``shard=(i, N)``); high values suggest a wrong label. Arguments as
    :func:`topk`'s."""
    v, _ = _native.self_influence(os.fspath(run), layer=layer, layers=_layers(layers),
                                  method=method, shard=shard, **_settings(settings))
    return v


def tracin_fast(checkpoints, train_features, train_labels, test_features=None,
                test_labels=None, *, k: Optional[int] = None, proponents: bool = True,
                loss: str = "ce", reduction: str = "sum", include_bias: bool = False,
                backend: str = "cpu", threads: Optional[int] = None):
    """TracInCPFast on arrays in memory, as Captum's ``TracInCPFast(...).influence(...)``.

    ``checkpoints``: a list of ``(weight [K, D], bias [K] or None, learning_rate)``, the
    final linear layer at each checkpoint. ``train_features`` ``[N, D]`` and
    ``test_features`` ``[T, D]``: that layer's inputs (one array for every checkpoint, or a
    list with one per checkpoint), C-contiguous float32, borrowed without a copy; labels:
    integer ``[N]`` / ``[T]``.

    Returns, as Captum: the scores ``[T, N]`` without ``k``; with ``k`` the pair
    ``(indices [T, k], scores [T, k])`` of the proponents (``proponents=False``: the
    opponents); without a test set the self-influence ``[N]``.
    """
    out = _native.tracin_fast(checkpoints, train_features, train_labels, test_features,
                              test_labels, k=k, loss=loss, reduction=reduction,
                              include_bias=include_bias, backend=backend, threads=threads)
    if isinstance(out, dict):
        key = "proponent" if proponents else "opponent"
        return out[f"{key}s"], out[f"{key}_scores"]
    return out


def _layers(layers):
    return None if layers is None else list(layers)
