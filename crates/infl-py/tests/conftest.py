"""Shared by the Python tests: where the fixtures and the `infl` binary are, and a small
safetensors reader (numpy only) for the CLI's outputs."""

import json
import os
import pathlib
import shutil
import subprocess
import struct

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
RUN = ROOT / "fixtures" / "captum" / "run"
FACTORS = ROOT / "fixtures" / "captum_tracincp" / "mlp" / "factors"

_DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32,
           "F16": np.float16, "U8": np.uint8, "I8": np.int8, "I16": np.int16}


def read_safetensors(path):
    """Tensors and metadata of a safetensors file."""
    data = pathlib.Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    out = {}
    for name, e in header.items():
        a, b = e["data_offsets"]
        buf = data[8 + n + a:8 + n + b]
        out[name] = np.frombuffer(buf, dtype=_DTYPES[e["dtype"]]).reshape(e["shape"])
    return out, meta


def infl_binary():
    """The `infl` binary: $INFL_BIN, else the workspace's target/{debug,release}/infl."""
    env = os.environ.get("INFL_BIN")
    if env:
        return env
    for profile in ["debug", "release"]:
        p = ROOT / "target" / profile / "infl"
        if p.exists():
            return str(p)
    found = shutil.which("infl")
    if found:
        return found
    pytest.fail("no infl binary: build it (cargo build -p infl-cli) or set INFL_BIN")


def cli(*args):
    """Runs `infl -q --backend cpu ARGS...`; returns (exit code, stderr)."""
    p = subprocess.run([infl_binary(), "-q", "--backend", "cpu", *map(str, args)],
                       capture_output=True, text=True)
    return p.returncode, p.stderr
