"""A small ctypes binding to libchromaprint (Debian package ``libchromaprint1``)."""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache

import numpy as np

from reelscope.errors import ModelError

ALGORITHM_DEFAULT = 1  # CHROMAPRINT_ALGORITHM_TEST2


@cache
def _lib() -> ctypes.CDLL:
    name = ctypes.util.find_library("chromaprint") or "libchromaprint.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:
        raise ModelError(
            "the Chromaprint library is missing: apt-get install libchromaprint1"
        ) from exc
    lib.chromaprint_new.restype = ctypes.c_void_p
    lib.chromaprint_new.argtypes = [ctypes.c_int]
    lib.chromaprint_free.argtypes = [ctypes.c_void_p]
    lib.chromaprint_start.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    lib.chromaprint_feed.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    lib.chromaprint_finish.argtypes = [ctypes.c_void_p]
    lib.chromaprint_get_raw_fingerprint.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.POINTER(ctypes.c_uint32)),
        ctypes.POINTER(ctypes.c_int),
    ]
    lib.chromaprint_dealloc.argtypes = [ctypes.c_void_p]
    lib.chromaprint_get_item_duration_ms.restype = ctypes.c_int
    lib.chromaprint_get_item_duration_ms.argtypes = [ctypes.c_void_p]
    return lib


def raw_fingerprint(samples: np.ndarray, sample_rate: int) -> tuple[np.ndarray, float]:
    """Raw Chromaprint of mono float audio: (uint32 items, seconds per item)."""
    lib = _lib()
    pcm = np.ascontiguousarray(np.clip(samples, -1.0, 1.0) * 32767.0, dtype=np.int16)
    ctx = lib.chromaprint_new(ALGORITHM_DEFAULT)
    try:
        if not lib.chromaprint_start(ctx, sample_rate, 1):
            raise ModelError("chromaprint_start failed")
        if not lib.chromaprint_feed(ctx, pcm.ctypes.data, int(pcm.size)):
            raise ModelError("chromaprint_feed failed")
        if not lib.chromaprint_finish(ctx):
            raise ModelError("chromaprint_finish failed")
        item_s = lib.chromaprint_get_item_duration_ms(ctx) / 1000.0
        ptr = ctypes.POINTER(ctypes.c_uint32)()
        size = ctypes.c_int()
        if not lib.chromaprint_get_raw_fingerprint(ctx, ctypes.byref(ptr), ctypes.byref(size)):
            raise ModelError("chromaprint_get_raw_fingerprint failed")
        try:
            items = (
                np.ctypeslib.as_array(ptr, shape=(size.value,)).copy()
                if size.value
                else np.zeros(0, np.uint32)
            )
        finally:
            lib.chromaprint_dealloc(ptr)
    finally:
        lib.chromaprint_free(ctx)
    return items.astype(np.uint32), item_s
