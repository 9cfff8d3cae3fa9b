"""Give freed memory back to the operating system, so the operator's RSS follows its live data.

Bursts of watch events allocate and free many large JSON bodies; glibc keeps the freed pages
in its heaps, and the resident size stays at the burst's peak. `malloc_trim` returns them.
Where the C library is not glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading

logger = logging.getLogger(__name__)


def _trimmer() -> ctypes._NamedFuncPointer | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim: ctypes._NamedFuncPointer = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def start_trimming(interval: float, stop: threading.Event) -> bool:
    """Trim the C heap every `interval` seconds until `stop` is set; False where unsupported."""
    trim = _trimmer()
    if trim is None:
        logger.debug("malloc_trim is not available: not trimming")
        return False

    def loop() -> None:
        while not stop.wait(interval):
            trim(0)

    threading.Thread(target=loop, name="kubeserve-malloc-trim", daemon=True).start()
    return True
