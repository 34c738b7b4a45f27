"""The peer the overhead benchmark compares with: the ``timetracer`` 1.6.0 package from PyPI, in a venv of its own.

It is another project under the same import name, so it cannot share the project's venv;
the venv is made once (``bench/.peer-venv``) with ``pip install``, and reused.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PEER = "timetracer==1.6.0"
_VENV = Path(__file__).resolve().parent / ".peer-venv"
_REQUIREMENTS = [
    f"timetracer[starlette,httpx,sqlalchemy]{PEER.removeprefix('timetracer')}",
    "uvicorn",
]


def peer_python() -> str:
    """The interpreter of the peer's venv, made (and the package installed) on first use."""
    python = _VENV / "bin" / "python"
    ready = _VENV / ".installed"
    if not ready.exists():
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *_REQUIREMENTS], check=True)
        ready.write_text(PEER + "\n")
    return str(python)
