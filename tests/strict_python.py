"""Find a Python 3.13+ interpreter: the first that verifies TLS with VERIFY_X509_STRICT, as
Debian 13's python3 does. Tests that need one fail loudly without it: skipping would hide the
very clients that reject a legacy cluster CA."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import List, Optional

import pytest


def _pyenv_roots() -> List[Path]:
    roots = [os.environ["PYENV_ROOT"]] if os.environ.get("PYENV_ROOT") else []
    if shutil.which("pyenv"):
        out = subprocess.run(["pyenv", "root"], capture_output=True, text=True)
        roots += [out.stdout.strip()] if out.returncode == 0 else []
    roots.append(str(Path.home() / ".pyenv"))  # pyenv's own default root
    return [Path(r) for r in dict.fromkeys(roots) if r]


def find_python313() -> Optional[str]:
    """pyenv's installs first (a pyenv shim may point elsewhere), then python3.13 on PATH."""
    found = [str(p) for root in _pyenv_roots() for p in sorted(root.glob("versions/3.13*/bin/python3"))]
    found.append(shutil.which("python3.13") or "")
    return next((p for p in found if p and _is_313(p)), None)


def _is_313(path: str) -> bool:
    try:
        return subprocess.run([path, "-c", "import sys; sys.exit(sys.version_info[:2] < (3, 13))"],
                              capture_output=True, timeout=30).returncode == 0
    except OSError:
        return False


def python313() -> str:
    path = find_python313()
    if path is None:
        pytest.fail("no Python 3.13 interpreter: looked for python3.13 on PATH and for "
                    f"versions/3.13*/bin/python3 under {', '.join(map(str, _pyenv_roots()))}; "
                    "install one (Debian 13's python3, or pyenv install 3.13) - these tests "
                    "prove strict TLS clients accept what pvemond hands out", pytrace=False)
    return path


if __name__ == "__main__":  # the Makefile builds the exporter's venv with it
    import sys
    found = find_python313()
    print(found or "", end="")
    sys.exit(0 if found else 1)
