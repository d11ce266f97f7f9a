#!/usr/bin/env python3
"""The factor exporter from a checkout, without installing infl: runs ``infl.torch``.

The exporter's one home is ``crates/infl-py/python/infl/torch.py`` (installed as
``infl.torch``); this file loads that module by path, so the command
``python python/export_factors.py ...`` and ``from export_factors import export_factors``
(with ``python/`` on ``sys.path``) keep working where only torch and safetensors are
installed. See that module for the API and the file format.
"""

import importlib.util
import pathlib
import sys

_PATH = pathlib.Path(__file__).resolve().parents[1] / "crates/infl-py/python/infl/torch.py"
_spec = importlib.util.spec_from_file_location("infl_torch_exporter", _PATH)
_module = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _module
_spec.loader.exec_module(_module)

__all__ = list(_module.__all__)
globals().update({name: getattr(_module, name) for name in __all__})

if __name__ == "__main__":
    sys.exit(_module.main())
