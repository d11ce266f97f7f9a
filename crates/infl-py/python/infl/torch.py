"""``infl.torch``: per-example gradient factors of a PyTorch model, for
``infl --method tracincp|influence --factors DIR`` (and ``infl.topk(..., method=...)``).

For every checkpoint and split this writes one safetensors file from which infl computes
TracInCP and influence functions over the chosen layers without ever materialising a
per-example gradient of a linear layer. It needs torch and safetensors, imported by this
module only (``import infl`` never imports torch). Usable as a module::

    from infl.torch import export_factors
    export_factors(model, ["fc1", "fc2", "fc3"],
                   splits={"train": (x_train, y_train), "test": (x_test, y_test, test_ids)},
                   checkpoints=[("checkpoint-1", "run/checkpoint-1.safetensors", 0.1),
                                ("checkpoint-2", state_dict, 0.05)],
                   out_dir="factors", loss="cross_entropy")

and as a command (``python -m infl.torch --help``; from a checkout without installing
infl, ``python python/export_factors.py --help`` runs this same file)::

    python python/export_factors.py --model mypkg.models:make_model --data data.safetensors \\
        --checkpoint checkpoint-1=run/ckpt1.safetensors:0.1 \\
        --checkpoint checkpoint-2=run/ckpt2.pt:0.05 --layers fc1,fc2,fc3 --out factors

File format ("infl factors v1")
-------------------------------
One folder per run, holding for each checkpoint NAME ``NAME.train.safetensors`` and,
optionally, ``NAME.test.safetensors``. Checkpoint names sort naturally (``checkpoint-2``
before ``checkpoint-10``). Each file holds, for every traced layer ``L`` (the module's
qualified name, e.g. ``fc1``, ``features.0``):

* ``nn.Linear``: ``L.a`` float ``[N, D]``, the layer's input, and ``L.g`` float ``[N, K]``,
  the gradient of the example's own loss with respect to the layer's output. A Linear
  applied to a sequence gives ``L.a`` ``[N, S, D]`` and ``L.g`` ``[N, S, K]`` (several
  leading dimensions are flattened into S).
* ``nn.Conv2d``: ``L.a`` ``[N, S, C·kh·kw]``, the unfolded input patches exactly as
  ``torch.nn.functional.unfold`` gives them (with the layer's kernel size, dilation,
  padding and stride), transposed to positions first; S = H'·W' output positions in
  row-major order. ``L.g`` ``[N, S, out_C]``: the output's gradient ``[N, out_C, H', W']``
  reshaped to ``[N, out_C, S]`` and transposed.

  For both, example i's weight gradient is ``Σ_s g[i,s] ⊗ a[i,s]`` (``[K, D]``, for a conv
  the weight ``[out_C, C, kh, kw]`` flattened to ``[out_C, C·kh·kw]``) and its bias gradient
  ``Σ_s g[i,s]``. Metadata ``L.bias`` = ``"true"`` when the layer has a bias, else
  ``"false"``; ``L.kind`` = ``"linear"`` or ``"conv2d"``.
* Any other traced parameter ``P`` (a parameter of a module that is neither Linear nor
  Conv2d, e.g. ``ln.weight`` of a LayerNorm): ``P.grad`` ``[N, numel]``, the dense
  per-example gradient (``torch.func.vmap(grad)``, falling back to a per-example loop).
  Metadata ``P.kind`` = ``"dense"``. Naming such a module traces each of its own
  parameters (``ln`` → ``ln.weight``, ``ln.bias``); a parameter may also be named directly.

A Linear/Conv2d called several times per forward pass (shared weights) gets its calls as
further positions (concatenated along S, in call order), since its gradient is the sum
over calls; the number of positions must be the same for every example.

With cross-entropy the train split also carries ``L.g_sampled`` (shape of ``L.g``) for
every Linear/Conv2d layer: the output gradients for labels drawn from the model's
softmax (:func:`sampled_labels`; ``sample_seed``), the true Fisher's, as Kronfluence
fits by default.

plus ``ids`` int64 ``[N]`` (distinct; default 0..N-1), and for ``loss="cross_entropy"``
``labels`` int64 ``[N]``, for ``loss="mse"`` ``targets`` float ``[N, K]`` (the same
names as infl's feature files). Metadata: ``format`` = ``"infl factors v1"``,
``layers`` (the traced names in order, comma-separated: each has either ``.a``/``.g`` or
``.grad`` tensors), ``loss`` (``"cross_entropy"`` or ``"mse"``), ``reduction`` =
``"sum"``, ``learning_rate`` (the rate in force for the epoch that ended at this
checkpoint, a decimal string; absent when unknown, and infl then falls back to
``--learning-rate`` or 1.0), ``checkpoint`` (NAME) and ``split``.

"The example's own loss" is the loss of that one example with reduction "sum": for
cross-entropy ``g`` at the logits is ``softmax(out) − onehot(y)``, for MSE
``2 (out − y)``; it is not divided by the batch size. (Captum multiplies the jacobian of
a "mean" loss back by the batch size, so its TracInCP gives these numbers for either
reduction with cross-entropy; with ``MSELoss(mean)`` Captum's scores are these divided
by K².) The model is put in ``eval()`` mode, so dropout is off and batch norm uses its
running statistics; no example affects another's gradient and the batch size changes
nothing but the floating-point rounding.

Floats are written as f32 by default (``dtype`` / ``--dtype``: f16, bf16, f32, f64);
gradients are computed in the model's own dtype. Outputs are written to a temporary file
and renamed, with the header's metadata keys sorted, so a rerun gives identical bytes.
"""

from __future__ import annotations

import argparse
import decimal
import importlib
import importlib.util
import json
import os
import sys
import tempfile
from typing import Any, Callable, Iterable, Mapping, Sequence

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from safetensors import safe_open
    from safetensors.torch import save_file
except ImportError as e:  # exercised by the package's tests, which have no torch
    raise ImportError(
        f"infl.torch needs PyTorch and safetensors ({e}): pip install torch safetensors"
    ) from e

__all__ = ["export_factors", "ExportError", "FORMAT", "load_state_dict", "sampled_labels", "save_safetensors", "main"]

FORMAT = "infl factors v1"
LOSSES = ("cross_entropy", "mse")
SPLITS = ("train", "test")
DTYPES = {
    "f16": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "f32": torch.float32,
    "float32": torch.float32,
    "f64": torch.float64,
    "float64": torch.float64,
}


class ExportError(ValueError):
    """Bad input to the exporter (unknown layer, unsupported module, wrong shapes...)."""


SAMPLED = "g_sampled"
"""Suffix of the output gradients for labels drawn from the model (``L.g_sampled``)."""

_MASK = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def sampled_labels(logits: torch.Tensor, ids: Any, seed: int) -> torch.Tensor:
    """One label per example drawn from ``softmax(logits)``: a uniform keyed by ``seed`` and
    the example's id (splitmix64; not its row, batch or device) through the inverse CDF in
    float64. Kronfluence's default ``use_empirical_fisher=False`` fits on such labels."""
    ids = torch.as_tensor(ids).reshape(-1).tolist()
    key = _splitmix64(int(seed) & _MASK)
    u = torch.tensor([(_splitmix64(key ^ (int(i) & _MASK)) >> 11) * 2.0**-53 for i in ids],
                     dtype=torch.float64)
    c = torch.softmax(logits.detach().double().cpu(), 1).cumsum(1)
    drawn = (c < u[:, None] * c[:, -1:]).sum(1)
    return drawn.clamp_max(c.shape[1] - 1)


# --------------------------------------------------------------------------------------
# small helpers


def lr_string(lr: float) -> str:
    """A learning rate as a plain decimal string: 0.05 -> "0.05", 1e-05 -> "0.00001"."""
    lr = float(lr)
    if not (lr == lr and abs(lr) != float("inf")):
        raise ExportError(f"learning rate {lr!r} is not finite")
    s = repr(lr)
    if "e" in s or "E" in s:
        s = format(decimal.Decimal(s), "f")
    if s.endswith(".0"):
        s = s[:-2]
    return s


def save_safetensors(tensors: Mapping[str, torch.Tensor], path: str, metadata: Mapping[str, str]) -> None:
    """``safetensors.torch.save_file`` to a temporary file, header metadata keys sorted
    (byte-identical reruns), then an atomic rename onto ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=directory)
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=dict(metadata))
        with open(tmp, "r+b") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
            if "__metadata__" in header:
                header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
            new = json.dumps(header, separators=(",", ":")).encode()
            assert len(new) <= n, (len(new), n)
            f.seek(8)
            f.write(new + b" " * (n - len(new)))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_state_dict(source: Any) -> tuple[dict, float | None]:
    """A state dict and the learning rate stored with it (or None).

    ``source``: a mapping (used as is; a ``"learning_rate"`` entry is taken as the rate
    and dropped), a ``.safetensors`` path (metadata ``learning_rate``), or a ``torch.save``
    file holding a state dict or a dict with ``"state_dict"`` / ``"model_state_dict"`` /
    ``"model"`` and optionally ``"learning_rate"`` (as Captum's default loader reads it).
    """
    lr = None
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise ExportError(f"checkpoint {path!r}: not a file")
        if path.endswith(".safetensors"):
            with safe_open(path, framework="pt") as f:
                meta = f.metadata() or {}
                sd = {k: f.get_tensor(k) for k in f.keys()}
            if "learning_rate" in meta:
                lr = float(meta["learning_rate"])
            return sd, lr
        obj = torch.load(path, map_location="cpu", weights_only=True)
        source = obj
    if not isinstance(source, Mapping):
        raise ExportError(f"checkpoint: expected a state dict or a path, got {type(source).__name__}")
    sd = dict(source)
    if "learning_rate" in sd and not isinstance(sd["learning_rate"], torch.Tensor):
        lr = float(sd.pop("learning_rate"))
    for key in ("state_dict", "model_state_dict", "model"):
        if key in sd and isinstance(sd[key], Mapping):
            sd = dict(sd[key])
            break
    return sd, lr


def _module_listing(model: nn.Module) -> str:
    rows = []
    for name, m in model.named_modules():
        if not name:
            continue
        own = [p for p, _ in m.named_parameters(recurse=False)]
        rows.append(f"  {name} ({type(m).__name__}{', params: ' + ', '.join(own) if own else ''})")
    return "\n".join(rows) if rows else "  (no submodules)"


# --------------------------------------------------------------------------------------
# what to trace


class _Traced:
    """One traced name: a Linear/Conv2d module (factors) or a parameter (dense grad)."""

    def __init__(self, name: str, kind: str, module: nn.Module | None = None, param: nn.Parameter | None = None):
        self.name = name
        self.kind = kind  # "linear" | "conv2d" | "dense"
        self.module = module
        self.param = param


def _resolve(model: nn.Module, names: Sequence[str]) -> list[_Traced]:
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    out: list[_Traced] = []
    seen: set[str] = set()

    def add(t: _Traced) -> None:
        if t.name in seen:
            raise ExportError(f"layer {t.name!r} is traced twice")
        seen.add(t.name)
        out.append(t)

    if not names:
        raise ExportError("no layers to trace; the model's modules are:\n" + _module_listing(model))
    for name in names:
        if not name or "," in name:
            raise ExportError(f"bad layer name {name!r}")
        if name in modules and name != "":
            m = modules[name]
            if isinstance(m, nn.Linear):
                add(_Traced(name, "linear", module=m))
            elif isinstance(m, nn.Conv2d):
                if m.groups != 1:
                    raise ExportError(
                        f"layer {name!r}: nn.Conv2d with groups={m.groups} is not supported "
                        f"(its weight gradient is not one outer product); trace its parameters "
                        f"densely instead: {name}.weight"
                    )
                if m.padding_mode != "zeros":
                    raise ExportError(
                        f"layer {name!r}: nn.Conv2d with padding_mode={m.padding_mode!r} is not "
                        f"supported (only 'zeros'); trace {name}.weight densely instead"
                    )
                add(_Traced(name, "conv2d", module=m))
            else:
                own = list(m.named_parameters(recurse=False))
                if not own:
                    raise ExportError(
                        f"layer {name!r} is a {type(m).__name__}, which has no parameters of its "
                        f"own to trace (supported: nn.Linear, nn.Conv2d, or any module/parameter "
                        f"traced densely); the model's modules are:\n" + _module_listing(model)
                    )
                for pname, p in own:
                    add(_Traced(f"{name}.{pname}", "dense", param=p))
        elif name in params:
            add(_Traced(name, "dense", param=params[name]))
        else:
            raise ExportError(
                f"unknown layer {name!r}; the model's modules are:\n" + _module_listing(model)
            )
    # a module's parameter traced densely and as factors at once would be counted twice
    factor_params = {id(p) for t in out if t.module is not None for p in t.module.parameters()}
    for t in out:
        if t.kind == "dense" and id(t.param) in factor_params:
            raise ExportError(f"parameter {t.name!r} is also covered by a traced Linear/Conv2d layer")
    return out


# --------------------------------------------------------------------------------------
# data


def _batches(split: Any, batch_size: int) -> Iterable[tuple[Any, torch.Tensor, torch.Tensor | None]]:
    """(x, y, ids-or-None) batches from a tuple of tensors or an iterable of batches."""
    if isinstance(split, (tuple, list)) and len(split) in (2, 3) and isinstance(split[1], torch.Tensor):
        x, y = split[0], split[1]
        ids = split[2] if len(split) == 3 else None
        n = len(y)
        xs = x if isinstance(x, (tuple, list)) else (x,)
        for t in xs:
            if len(t) != n:
                raise ExportError(f"inputs have {len(t)} rows but targets have {n}")
        if ids is not None and len(ids) != n:
            raise ExportError(f"ids have {len(ids)} rows but targets have {n}")
        for s in range(0, n, batch_size):
            xb = tuple(t[s : s + batch_size] for t in xs)
            yield (xb if isinstance(x, (tuple, list)) else xb[0]), y[s : s + batch_size], (
                None if ids is None else ids[s : s + batch_size]
            )
        return
    for batch in split:  # a DataLoader or any iterable of (x, y) / (x, y, ids)
        if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
            raise ExportError("a data loader must yield (x, y) or (x, y, ids) batches")
        yield batch[0], batch[1], (batch[2] if len(batch) == 3 else None)


def _to(x: Any, device: torch.device) -> Any:
    if isinstance(x, (tuple, list)):
        return tuple(t.to(device) for t in x)
    return x.to(device)


def _call(model: nn.Module, x: Any) -> torch.Tensor:
    return model(*x) if isinstance(x, tuple) else model(x)


def _loss_sum(loss: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if loss == "cross_entropy":
        if out.dim() != 2 or y.dim() != 1:
            raise ExportError(
                f"cross_entropy needs outputs [N, K] and integer labels [N]; got outputs "
                f"{list(out.shape)} and labels {list(y.shape)}"
            )
        return F.cross_entropy(out, y.long(), reduction="sum")
    if out.shape != y.shape:
        raise ExportError(f"mse needs targets shaped like the outputs {list(out.shape)}; got {list(y.shape)}")
    return F.mse_loss(out, y.to(out.dtype), reduction="sum")


# --------------------------------------------------------------------------------------
# the per-split export


def _conv_patches(m: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """Unfolded input patches of a Conv2d, [N, S, C*kh*kw]."""
    if x.dim() == 3:  # unbatched input [C, H, W]
        raise ExportError("nn.Conv2d on an unbatched input is not supported")
    padding = m.padding
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0, 0)
        else:  # "same": total padding dilation*(k-1), the extra pixel on the right/bottom
            pads = []
            for d, k in zip(reversed(m.dilation), reversed(m.kernel_size)):
                total = d * (k - 1)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
            padding = (0, 0)
    cols = F.unfold(x, m.kernel_size, dilation=m.dilation, padding=padding, stride=m.stride)
    return cols.transpose(1, 2)


def _export_split(
    model: nn.Module,
    traced: list[_Traced],
    split: Any,
    loss: str,
    batch_size: int,
    device: torch.device,
    sample_seed: int | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor | None]:
    """One split's factors (and, with ``sample_seed``, ``L.g_sampled``), labels and ids."""
    factor_layers = [t for t in traced if t.kind != "dense"]
    dense = [t for t in traced if t.kind == "dense"]
    acc: dict[str, list[torch.Tensor]] = {}
    ys: list[torch.Tensor] = []
    id_parts: list[torch.Tensor] = []
    any_ids = None
    row0 = 0

    state: dict[str, list[dict[str, torch.Tensor]]] = {}
    capturing = [False]  # hooks are idle during the torch.func passes for dense gradients

    def make_fwd(t: _Traced) -> Callable:
        def fwd(mod, inputs, output):
            if not capturing[0]:
                return
            if not output.requires_grad:
                raise ExportError(f"layer {t.name!r}: its output does not require grad")
            call = {"a": inputs[0].detach()}
            state[t.name].append(call)

            def grab(grad):
                call["g"] = grad.detach()

            # A tensor hook, not a full backward hook: it sees the gradient of this very
            # output even when a later op (ReLU(inplace=True)) modifies it in place.
            output.register_hook(grab)

        return fwd

    def positions(t: _Traced, a: torch.Tensor, g: torch.Tensor, nb: int):
        """One call's factors as [nb, S, D] / [nb, S, K] (2-D for a plain Linear)."""
        if t.kind == "linear":
            if a.shape[0] != nb:
                raise ExportError(f"layer {t.name!r}: input has {a.shape[0]} rows for a batch of {nb}")
            if a.dim() > 2:
                a = a.reshape(nb, -1, a.shape[-1])
                g = g.reshape(nb, -1, g.shape[-1])
            return a, g
        a = _conv_patches(t.module, a)
        g = g.reshape(nb, g.shape[1], -1).transpose(1, 2)
        if a.shape[1] != g.shape[1]:
            raise ExportError(f"layer {t.name!r}: {a.shape[1]} patches but {g.shape[1]} output positions")
        return a, g

    def collect(nb: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Every factor layer's (a, g) of the last backward pass."""
        got = {}
        for t in factor_layers:
            calls = state[t.name]
            if not calls:
                raise ExportError(f"layer {t.name!r} was not called in the forward pass")
            parts = []
            for call in calls:
                # a call whose output did not reach the loss contributes nothing
                g = call.get("g")
                if g is None:
                    continue
                parts.append(positions(t, call["a"], g, nb))
            if not parts:
                raise ExportError(f"layer {t.name!r}: no gradient reached its output")
            if len(parts) == 1:
                got[t.name] = parts[0]
            else:
                # A layer called several times per forward pass (shared weights): its
                # per-example gradient is the sum over calls, i.e. the calls are further
                # positions (as Captum's sample-wise gradients do).
                a = torch.cat([p[0] if p[0].dim() == 3 else p[0][:, None] for p in parts], 1)
                g = torch.cat([p[1] if p[1].dim() == 3 else p[1][:, None] for p in parts], 1)
                got[t.name] = (a, g)
        return got

    handles = []
    try:
        for t in factor_layers:
            state[t.name] = []
            handles.append(t.module.register_forward_hook(make_fwd(t)))

        for xb, yb, ib in _batches(split, batch_size):
            xb, yb = _to(xb, device), yb.to(device)
            ys.append(yb.detach().cpu())
            if any_ids is None:
                any_ids = ib is not None
            elif any_ids != (ib is not None):
                raise ExportError("some batches carry ids and others don't")
            if ib is not None:
                id_parts.append(torch.as_tensor(ib).detach().cpu().long().reshape(-1))
            nb = len(yb)

            if factor_layers:
                for calls in state.values():
                    calls.clear()
                model.zero_grad(set_to_none=True)
                capturing[0] = True
                try:
                    with torch.enable_grad():
                        out = _call(model, xb)
                        if out.shape[0] != nb:
                            raise ExportError(f"model output has {out.shape[0]} rows for a batch of {nb}")
                        total = _loss_sum(loss, out, yb)
                        if not total.requires_grad:
                            raise ExportError(
                                "the loss does not depend on any traced layer: "
                                + ", ".join(t.name for t in factor_layers)
                            )
                        total.backward(retain_graph=sample_seed is not None)
                finally:
                    capturing[0] = False
                for name, (a, g) in collect(nb).items():
                    acc.setdefault(f"{name}.a", []).append(a.cpu())
                    acc.setdefault(f"{name}.g", []).append(g.cpu())
                if sample_seed is not None:
                    # The same graph's backward pass again, from labels drawn from the
                    # model: the output hooks see the new gradients; the inputs are the same.
                    ids = ib if ib is not None else torch.arange(row0, row0 + nb)
                    drawn = sampled_labels(out, ids, sample_seed).to(out.device)
                    with torch.enable_grad():
                        _loss_sum(loss, out, drawn).backward()
                    for name, (_, g) in collect(nb).items():
                        acc.setdefault(f"{name}.{SAMPLED}", []).append(g.cpu())
                model.zero_grad(set_to_none=True)

            for name, gd in _dense_grads(model, dense, xb, yb, loss).items():
                acc.setdefault(f"{name}.grad", []).append(gd.cpu())
            row0 += nb
    finally:
        for h in handles:
            h.remove()

    if not ys:
        raise ExportError("empty split")
    tensors = {}
    for k, v in acc.items():
        shapes = {tuple(p.shape[1:]) for p in v}
        if len(shapes) > 1:
            raise ExportError(
                f"{k}: the shape per example changes between batches ({sorted(shapes)}); "
                f"a layer must see the same number of positions for every example"
            )
        tensors[k] = torch.cat(v)
    y_all = torch.cat(ys)
    ids = torch.cat(id_parts) if any_ids else None
    return tensors, y_all, ids


def _dense_grads(model: nn.Module, dense: list[_Traced], xb: Any, yb: torch.Tensor, loss: str) -> dict[str, torch.Tensor]:
    """Per-example gradients [B, numel] of the densely traced parameters."""
    if not dense:
        return {}
    names = [t.name for t in dense]
    params = {t.name: t.param.detach() for t in dense}
    rest = {k: v.detach() for k, v in model.named_parameters() if k not in params}
    buffers = {k: v for k, v in model.named_buffers()}
    xs = xb if isinstance(xb, tuple) else (xb,)

    def one(p, *row):
        *xr, yr = row
        out = torch.func.functional_call(model, {**rest, **buffers, **p}, tuple(t.unsqueeze(0) for t in xr))
        return _loss_sum(loss, out, yr.unsqueeze(0))

    try:
        grads = torch.func.vmap(torch.func.grad(one), in_dims=(None,) + (0,) * (len(xs) + 1))(params, *xs, yb)
    except ExportError:
        raise
    except Exception:  # an op vmap cannot batch: one example at a time
        rows = []
        for i in range(len(yb)):
            rows.append(torch.func.grad(one)(params, *(t[i] for t in xs), yb[i]))
        grads = {n: torch.stack([r[n] for r in rows]) for n in names}
    return {n: grads[n].reshape(len(yb), -1).detach() for n in names}


# --------------------------------------------------------------------------------------
# public API


def export_factors(
    model: nn.Module,
    layers: Sequence[str] | str,
    splits: Mapping[str, Any],
    checkpoints: Sequence[tuple],
    out_dir: str,
    loss: str = "cross_entropy",
    batch_size: int = 256,
    dtype: Any = torch.float32,
    device: Any = None,
    verbose: bool = False,
    sample_seed: int | None = 0,
) -> list[str]:
    """Write ``NAME.{train,test}.safetensors`` factor files for every checkpoint.

    - ``model``: the ``nn.Module``; each checkpoint's state dict is loaded into it (strict).
      It is left in eval mode with the last checkpoint's weights.
    - ``layers``: qualified names (a list, or a comma-separated string) of ``nn.Linear`` /
      ``nn.Conv2d`` modules (factors), or of other modules / parameters (dense gradients).
    - ``splits``: ``{"train": ..., "test": ...}`` ("test" optional); each a tuple
      ``(x, y)`` or ``(x, y, ids)`` of tensors (``x`` may be a tuple of model inputs) or
      an iterable of such batches (e.g. a ``DataLoader``). Without ids, rows are numbered
      0..N-1. ``y``: integer labels [N] for cross-entropy, float targets shaped like the
      output for MSE.
    - ``checkpoints``: ``(name, state_dict_or_path[, learning_rate])`` tuples; a missing or
      None rate is read from the checkpoint (safetensors metadata or a ``learning_rate``
      entry), else left out of the metadata.
    - ``loss``: ``"cross_entropy"`` (also ``"ce"``) or ``"mse"``; always per-example sum.
    - ``dtype``: float dtype of the written factors (torch dtype or "f16"/"bf16"/"f32"/"f64").
    - ``sample_seed``: with cross-entropy, the train split also gets ``L.g_sampled``, each
      Linear/Conv2d layer's output gradients for labels drawn from the model
      (:func:`sampled_labels`, keyed by this seed and the example's id), which
      ``infl ... --curvature true-fisher`` and ``--solver ekfac --curvature true-fisher``
      fit on (Kronfluence's default true Fisher); ``None`` skips that second backward pass.

    Returns the paths written, in checkpoint order.
    """
    loss = {"ce": "cross_entropy", "crossentropy": "cross_entropy"}.get(loss, loss)
    if loss not in LOSSES:
        raise ExportError(f"loss must be one of {LOSSES}, got {loss!r}")
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ExportError(f"dtype must be one of f16, bf16, f32, f64; got {dtype!r}")
        dtype = DTYPES[dtype]
    if dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise ExportError(f"dtype must be a float dtype, got {dtype}")
    if isinstance(layers, str):
        layers = [s.strip() for s in layers.split(",") if s.strip()]
    if int(batch_size) < 1:
        raise ExportError("batch_size must be at least 1")
    unknown = set(splits) - set(SPLITS)
    if unknown or "train" not in splits:
        raise ExportError(f"splits must be 'train' and optionally 'test'; got {sorted(splits)}")
    if not checkpoints:
        raise ExportError("no checkpoints")
    names = [c[0] for c in checkpoints]
    for n in names:
        if not n or "/" in n or "\\" in n or n.startswith("."):
            raise ExportError(f"bad checkpoint name {n!r}")
    if len(set(names)) != len(names):
        raise ExportError(f"duplicate checkpoint names in {names}")

    traced = _resolve(model, list(layers))
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    device = torch.device(device)
    os.makedirs(out_dir, exist_ok=True)

    # Captured tensors (DataLoaders) may only be iterable once per pass: materialise
    # each split's batches once if it is a one-shot iterator.
    splits = {k: (list(v) if isinstance(v, Iterable) and iter(v) is v else v) for k, v in splits.items()}

    req = {id(p): p.requires_grad for p in model.parameters()}
    written = []
    try:
        for ckpt in checkpoints:
            if len(ckpt) not in (2, 3):
                raise ExportError("a checkpoint is (name, state_dict_or_path[, learning_rate])")
            name, source = ckpt[0], ckpt[1]
            lr = ckpt[2] if len(ckpt) == 3 else None
            sd, stored_lr = load_state_dict(source)
            if lr is None:
                lr = stored_lr
            missing, unexpected = model.load_state_dict(sd, strict=False)
            if missing or unexpected:
                raise ExportError(
                    f"checkpoint {name!r} does not fit the model: missing {list(missing)}, "
                    f"unexpected {list(unexpected)}"
                )
            model.to(device)
            model.eval()
            # Only the traced layers' parameters require grad: hooks fire, the backward
            # pass accumulates no gradient anywhere else.
            for p in model.parameters():
                p.requires_grad_(False)
            for t in traced:
                for p in (t.module.parameters() if t.module is not None else [t.param]):
                    p.requires_grad_(True)
            for split_name in SPLITS:
                if split_name not in splits:
                    continue
                seed = sample_seed if (loss == "cross_entropy" and split_name == "train") else None
                tensors, y, ids = _export_split(model, traced, splits[split_name], loss,
                                                int(batch_size), device, seed)
                n = len(y)
                if ids is None:
                    ids = torch.arange(n, dtype=torch.int64)
                if len(ids) != n:
                    raise ExportError(f"{split_name}: {len(ids)} ids for {n} examples")
                if len(torch.unique(ids)) != n:
                    raise ExportError(f"{split_name}: ids are not distinct")
                out = {k: v.to(dtype) for k, v in tensors.items()}
                if loss == "cross_entropy":
                    out["labels"] = y.long()
                else:
                    out["targets"] = y.to(dtype)
                out["ids"] = ids.long()
                meta = {
                    "format": FORMAT,
                    "layers": ",".join(t.name for t in traced),
                    "loss": loss,
                    "reduction": "sum",
                    "checkpoint": name,
                    "split": split_name,
                }
                if lr is not None:
                    meta["learning_rate"] = lr_string(lr)
                for t in traced:
                    meta[f"{t.name}.kind"] = t.kind
                    if t.module is not None:
                        meta[f"{t.name}.bias"] = "true" if t.module.bias is not None else "false"
                path = os.path.join(out_dir, f"{name}.{split_name}.safetensors")
                save_safetensors(out, path, meta)
                written.append(path)
                if verbose:
                    print(f"wrote {path} ({n} examples)", file=sys.stderr)
    finally:
        for p in model.parameters():
            p.requires_grad_(req.get(id(p), True))
    return written


# --------------------------------------------------------------------------------------
# command line


def _load_factory(spec: str) -> Callable[[], nn.Module]:
    if ":" not in spec:
        raise ExportError(f"--model must be MODULE:FACTORY or FILE.py:FACTORY, got {spec!r}")
    mod_name, attr = spec.rsplit(":", 1)
    if mod_name.endswith(".py"):
        s = importlib.util.spec_from_file_location("_infl_user_model", mod_name)
        if s is None or s.loader is None:
            raise ExportError(f"cannot load {mod_name!r}")
        module = importlib.util.module_from_spec(s)
        s.loader.exec_module(module)
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        module = importlib.import_module(mod_name)
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ExportError(f"{mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ExportError(f"{spec!r} is not callable")
    return obj


def _parse_checkpoint(arg: str) -> tuple[str, str, float | None]:
    if "=" not in arg:
        raise ExportError(f"--checkpoint must be NAME=PATH[:LR], got {arg!r}")
    name, rest = arg.split("=", 1)
    path, lr = rest, None
    if ":" in rest:
        head, tail = rest.rsplit(":", 1)
        try:
            lr = float(tail)
            path = head
        except ValueError:
            pass
    return name, path, lr


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="export_factors.py",
        description="Export per-example gradient factors (infl factors v1) for "
        "`infl --method tracincp --factors DIR`.",
        epilog="Example: python python/export_factors.py --model mypkg.models:make_model "
        "--data data.safetensors --checkpoint checkpoint-1=ckpt1.safetensors:0.1 "
        "--checkpoint checkpoint-2=ckpt2.pt:0.05 --layers fc1,fc2 --out factors",
    )
    ap.add_argument("--model", required=True, help="MODULE:FACTORY or FILE.py:FACTORY, a callable returning the nn.Module")
    ap.add_argument(
        "--data",
        required=True,
        help="safetensors file with train_x, train_y and optionally train_ids, test_x, test_y, test_ids",
    )
    ap.add_argument(
        "--checkpoint",
        action="append",
        required=True,
        metavar="NAME=PATH[:LR]",
        help="repeatable; PATH a .safetensors state dict or a torch .pt file; LR the learning rate "
        "(default: the checkpoint's own learning_rate, if any)",
    )
    ap.add_argument("--layers", required=True, help="comma-separated qualified module or parameter names")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--loss", default="cross_entropy", choices=["cross_entropy", "ce", "mse"])
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--dtype", default="f32", choices=["f16", "bf16", "f32", "f64"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--sample-seed", type=int, default=0,
                    help="seed of the labels drawn for L.g_sampled (the true Fisher; cross-entropy)")
    ap.add_argument("--no-sampled", action="store_true",
                    help="skip L.g_sampled (one backward pass per batch instead of two)")
    args = ap.parse_args(argv)
    try:
        if args.threads > 0:
            torch.set_num_threads(args.threads)
        model = _load_factory(args.model)()
        if not isinstance(model, nn.Module):
            raise ExportError(f"{args.model} returned a {type(model).__name__}, not an nn.Module")
        try:
            with safe_open(args.data, framework="pt") as f:
                data = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors raises its own error types
            raise ExportError(f"{args.data}: cannot read as safetensors: {e}") from e
        splits = {}
        for s in SPLITS:
            if f"{s}_x" in data or f"{s}_y" in data:
                if f"{s}_x" not in data or f"{s}_y" not in data:
                    raise ExportError(f"{args.data}: {s}_x and {s}_y must come together")
                t = (data[f"{s}_x"], data[f"{s}_y"])
                if f"{s}_ids" in data:
                    t = t + (data[f"{s}_ids"],)
                splits[s] = t
        if "train" not in splits:
            raise ExportError(f"{args.data}: no train_x / train_y")
        ckpts = [_parse_checkpoint(c) for c in args.checkpoint]
        export_factors(
            model,
            args.layers,
            splits,
            ckpts,
            args.out,
            loss=args.loss,
            batch_size=args.batch_size,
            dtype=args.dtype,
            device=args.device,
            verbose=True,
            sample_seed=None if args.no_sampled else args.sample_seed,
        )
    except (ExportError, FileNotFoundError, ImportError) as e:
        print(f"export_factors: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
