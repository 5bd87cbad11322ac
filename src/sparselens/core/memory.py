"""Hand the memory a long CPU loop has freed back to the operating system (glibc only).

Why: under bf16 autocast on a CPU, each training step allocates and frees tensors of many
sizes (the bf16 copies of the weights and inputs, the top-k buffers, their gradients). glibc
keeps what was freed in its heap instead of returning it, so the process's resident memory
kept growing: a `sparselens train` of an 8,192-latent TopK SAE on gemma-3-270m's resid.6 with
`--autocast bfloat16` peaked at 3.2 GB after 400k tokens and 6.2 GB after 1.2M (1.3 GB and
flat in float32), and `make run` at 7.65 GB. Calling ``malloc_trim(0)`` every few steps kept
the same 1.2M-token run at 2.0 GB with no measurable slowdown (docs/performance.md). Pinning
glibc's mmap threshold instead (``MALLOC_MMAP_THRESHOLD_``) also bounds it but costs ~35% of
the step time in page faults.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Callable

TRIM_EVERY = 10
"""Steps between two trims in a training loop (a trim costs well under a millisecond)."""


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


def release_free_memory() -> bool:
    """Return the heap's free pages to the OS; False where the C library cannot (not glibc)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
