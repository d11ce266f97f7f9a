"""``infl.torch`` (the PyTorch factor exporter) as a package module: ``import infl`` pulls in
neither torch nor Ray, and without torch ``import infl.torch`` says what to install. The
exporter's numbers are checked against Captum by ``fixtures/captum_tracincp/generate.py``
(``cargo xtask fixtures``; CI has no torch)."""

import subprocess
import sys

# Makes `import torch` fail in a child interpreter, whether or not torch is installed.
BLOCK_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'")
sys.meta_path.insert(0, NoTorch())
"""


def python(code):
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


def test_import_infl_imports_neither_torch_nor_ray():
    code, out = python(
        "import sys, infl, infl.ray\n"
        "print(sorted(m for m in ('torch', 'ray', 'safetensors') if m in sys.modules))"
    )
    assert code == 0, out
    assert out.strip() == "[]", out


def test_infl_torch_without_torch_names_what_to_install():
    code, out = python(
        BLOCK_TORCH
        + "try:\n"
        "    import infl.torch\n"
        "except ImportError as e:\n"
        "    print('refused:', e)\n"
        "else:\n"
        "    print('imported')\n"
    )
    assert code == 0, out
    assert "refused:" in out and "pip install torch safetensors" in out, out
