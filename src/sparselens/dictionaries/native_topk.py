"""The CPU top-k of `native_topk.c`: compiled on first use, called through ctypes.

`kernels.select_topk` asks `row_topk` for the k largest entries of each row of a
pre-activation tile (plus the encoder bias). On a CPU with a C compiler that is one pass over
the tile; `grouped_topk` (pure torch) needs a group-maximum pass, gathers and four small
``torch.topk`` calls, about five times the time (docs/performance.md). Anything the C code does
not cover (CUDA, other dtypes, no compiler, ``SPARSELENS_NATIVE=0``) gets None and the caller
uses the torch path, so results never depend on whether the library could be built; only
float rounding of the bias addition differs.

The shared library is built with ``-O3 -march=native`` into the user cache, in a folder named
by a hash of the source, the compiler and the CPU, and renamed into place only once complete,
so concurrent processes (torchrun ranks) and interrupted builds are safe.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("native_topk.c")
ENV_SWITCH = "SPARSELENS_NATIVE"
"""Set to 0 to never build or use the compiled kernel."""
FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC"]
_DTYPES = (torch.bfloat16, torch.float32)
_lock = threading.Lock()
_state: dict[str, ctypes.CDLL | None] = {}


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def _compiler() -> list[str] | None:
    """``$CC`` (which may carry flags) or the system's cc/gcc."""
    if os.environ.get("CC"):
        return shlex.split(os.environ["CC"])
    found = shutil.which("cc") or shutil.which("gcc")
    return [found] if found else None


def _cpu_signature() -> str:
    """What ``-march=native`` depends on: the CPU model and its feature flags."""
    try:
        with open("/proc/cpuinfo") as info:
            lines = [line for line in info if line.startswith(("model name", "flags"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() or platform.machine()


def library_path(compiler: list[str]) -> Path:
    """Where the library for this source, compiler and CPU lives (built or not)."""
    from sparselens.core.paths import cache_dir

    version = subprocess.run([*compiler, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), " ".join(FLAGS), version,
                                    _cpu_signature()]).encode()).hexdigest()[:16]
    return cache_dir() / "native" / key / "libsparselens_topk.so"


def _build(compiler: list[str], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=".build.", suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        proc = subprocess.run([*compiler, *FLAGS, "-o", partial, str(SOURCE), "-lm"],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.strip()[-2000:] or f"{compiler[0]} failed")
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def load() -> ctypes.CDLL | None:
    """The compiled library (built now if needed), or None if it cannot be had here."""
    with _lock:
        if "lib" in _state:
            return _state["lib"]
        lib = None
        compiler = _compiler() if enabled() else None
        if compiler is not None:
            try:
                path = library_path(compiler)
                if not path.exists():
                    _build(compiler, path)
                lib = ctypes.CDLL(str(path))
                fn = lib.sparselens_topk
                fn.restype = ctypes.c_int
                fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_int64,
                               ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int,
                               ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
            except (OSError, RuntimeError, subprocess.SubprocessError) as err:
                warnings.warn(f"sparselens: the compiled top-k kernel is unavailable ({err}); "
                              "training uses the slower torch top-k. Install a C compiler "
                              "with OpenMP (gcc) or point CC at one for the fast path, or set "
                              f"{ENV_SWITCH}=0 to silence this.", RuntimeWarning, stacklevel=3)
                lib = None
        _state["lib"] = lib
        return lib


def supports(pre: Tensor, k: int) -> bool:
    """Whether `row_topk` takes this tile (CPU, bf16/fp32, rows contiguous, k at most n / 4;
    the C code keeps entry ids in int32)."""
    return (pre.device.type == "cpu" and pre.dtype in _DTYPES and pre.ndim == 2
            and pre.stride(1) == 1 and 0 < 4 * k <= pre.shape[1] < 2**31 and enabled())


def row_topk(pre: Tensor, bias: Tensor, k: int,
             by_magnitude: bool = False) -> tuple[Tensor, Tensor] | None:
    """Top-k of every row of ``pre + bias`` (by absolute value with `by_magnitude`).

    Returns float32 values (signed, bias included) and int64 indices, ``(rows, k)`` each,
    unordered within a row; or None when the tile is not supported or the library cannot be
    built (the caller then uses the torch path).
    """
    if not supports(pre, k):
        return None
    lib = load()
    if lib is None:
        return None
    rows, n = pre.shape
    bias = bias.detach().to(torch.float32).contiguous()
    if bias.shape != (n,):
        raise ValueError(f"bias must have shape ({n},), got {tuple(bias.shape)}")
    values = torch.empty(rows, k, dtype=torch.float32)
    indices = torch.empty(rows, k, dtype=torch.int64)
    status = lib.sparselens_topk(pre.data_ptr(), int(pre.dtype == torch.bfloat16), rows, n,
                                 pre.stride(0), bias.data_ptr(), k, int(by_magnitude),
                                 values.data_ptr(), indices.data_ptr(), torch.get_num_threads())
    if status != 0:
        raise MemoryError(f"the compiled top-k could not allocate its scratch memory (at most "
                          f"{12 * n} bytes a thread); free memory or set {ENV_SWITCH}=0")
    return values, indices
