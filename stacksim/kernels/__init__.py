"""Hot arithmetic, compiled with Numba. One fastmath setting for the whole package.

FASTMATH is off: re-association would let results depend on the CPU's vector width, and we
promise the same bytes out for the same scenario and seed on every machine.

Compiled code is cached on disk (``cache=True``), in a folder named by a hash of every module
that holds Numba functions. Numba checks only a cached function's own source file, not the
kernels it inlines from other modules: after a change to ``kernels/cost.py`` it would otherwise
load a scheduler compiled against the old kernel (the old parameter layout) and compute garbage.
A changed kernel therefore means a fresh cache folder. ``NUMBA_CACHE_DIR``, when set, wins.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numba

FASTMATH = False

# Every module with @njit functions; keep in step when one is added (a test checks it).
JIT_MODULES = ("kernels/cost.py", "serving/core.py", "serving/core_lora.py", "serving/core_state.py")


def _jit_cache_dir() -> Path | None:
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for rel in JIT_MODULES:
        digest.update(rel.encode())
        digest.update((package / rel).read_bytes())
    key = digest.hexdigest()[:16]
    # Beside the checkout when it is writable (.numba_cache/ is git-ignored), else the user cache.
    for base in (package.parent / ".numba_cache", Path.home() / ".cache" / "stacksim" / "numba"):
        try:
            (base / key).mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(base / key, os.W_OK):
            return base / key
    return None


if not os.environ.get("NUMBA_CACHE_DIR"):
    _dir = _jit_cache_dir()
    if _dir is not None:
        numba.config.CACHE_DIR = str(_dir)
