"""Host side of the Hopper kernels' TMA loads: tensor maps for [BH, S, 64] fp16 tensors, and the extra arguments.

A Hopper kernel here (``kernels/hopper/*.cu``) loads Q, K and V with ``cp.async.bulk.tensor``, which reads a 128-byte
*tensor map* passed by value (``const __grid_constant__ TmaMap``). This module builds those maps:

* :func:`map_layout` — pure: the dims, strides and box of the 3-D view ``{64, S, BH}`` (innermost first) with box
  ``{64, rows, 1}``; rows at or past S are zero-filled by the copy engine, so tails need no masking in the loads.
* :func:`check_addressable` — pure: the rules TMA imposes (16-byte aligned base, strides multiples of 16 below 2^40,
  dims ≤ 2^32, box rows 1..256, a box row no wider than the 128-byte swizzle), with a clear :class:`TmaError`.
* :func:`tensor_map` — encode one map (``cuda.bindings.driver.cuTensorMapEncodeTiled``; plain ``ctypes`` on
  ``libcuda`` when cuda-bindings is missing) into a numpy scalar of :data:`TMA_MAP_DTYPE` (128 bytes), which CuPy
  passes by value.
* :func:`hopper_extra_args` — the maps a Hopper kernel takes after the common ABI: ``(tma_q, tma_k, tma_v)``.
* :class:`MapEncoder` / :func:`encode_into` — encode a map straight into 128 bytes at a given address (the prepared
  launch's argument block, :class:`flashcore.launch.PreparedTmaLaunch`): ``cuTensorMapEncodeTiled`` through
  ``ctypes`` with the layout's arrays built once, so re-encoding for a new base pointer costs one driver call.
* :func:`hopper_grid` — pure: the grid of a Hopper kernel from its exported constants and the shape.

A map embeds the tensor's address: a new buffer needs a new map (a CUDA graph keeps the maps it was captured with).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

HEAD_DIM = 64
ELEMENT_BYTES = 2                 # fp16
ROW_BYTES = HEAD_DIM * ELEMENT_BYTES
SWIZZLE_BYTES = 128               # CU_TENSOR_MAP_SWIZZLE_128B: a box row may be at most this wide
MAX_BOX_ROWS = 256
MAX_DIM = 1 << 32
MAX_STRIDE = 1 << 40
BASE_ALIGN = 16
MAP_BYTES = 128                   # sizeof(CUtensorMap)
MAP_ALIGN = 64                    # alignof(CUtensorMap): its place in the kernel parameters and in host memory
SMEM_ALIGN = 1024                 # a 128-byte-swizzled destination must be 1024-byte aligned (the kernels align)

# cuda.h enum values (CUtensorMapDataType, …Interleave, …Swizzle, …L2promotion, …FloatOOBfill)
DTYPE_FLOAT16 = 6
INTERLEAVE_NONE = 0
SWIZZLE_128B = 3
L2_PROMOTION_256B = 3
OOB_FILL_ZERO = 0


def _map_dtype():
    import numpy as np

    return np.dtype({"names": ["w"], "formats": [(np.uint64, 16)], "itemsize": 128, "aligned": True})


class TmaError(ValueError):
    """An input the TMA copy engine cannot address (or a map the driver refused)."""


@dataclass(frozen=True)
class MapLayout:
    """What cuTensorMapEncodeTiled is given for one [BH, S, 64] fp16 tensor (innermost dimension first)."""

    global_dim: Tuple[int, int, int]        # (64, S, BH)
    global_strides: Tuple[int, int]         # bytes from one row to the next, one head to the next
    box_dim: Tuple[int, int, int]           # (64, rows, 1)
    element_strides: Tuple[int, int, int]   # (1, 1, 1)

    @property
    def box_bytes(self) -> int:
        """The transaction bytes one copy delivers (out-of-bounds rows included, as zeros)."""
        return self.box_dim[0] * self.box_dim[1] * self.box_dim[2] * ELEMENT_BYTES


def map_layout(bh: int, seq: int, box_rows: int, head_dim: int = HEAD_DIM) -> MapLayout:
    """The 3-D view {head_dim, seq, bh} of a contiguous [bh, seq, head_dim] fp16 tensor, box {head_dim, box_rows, 1}."""
    return MapLayout(global_dim=(int(head_dim), int(seq), int(bh)),
                     global_strides=(int(head_dim) * ELEMENT_BYTES, int(seq) * int(head_dim) * ELEMENT_BYTES),
                     box_dim=(int(head_dim), int(box_rows), 1), element_strides=(1, 1, 1))


def check_addressable(ptr: int, bh: int, seq: int, box_rows: int, head_dim: int = HEAD_DIM) -> MapLayout:
    """Raise :class:`TmaError` naming the broken rule, else return the layout."""
    if head_dim != HEAD_DIM:
        raise TmaError(f"the Hopper kernels take head dim {HEAD_DIM}, got {head_dim}")
    if bh < 1 or seq < 1:
        raise TmaError(f"empty tensor: bh={bh}, seq={seq}")
    if ptr % BASE_ALIGN:
        raise TmaError(f"TMA needs a {BASE_ALIGN}-byte aligned base address; this tensor starts at 0x{ptr:x} "
                       f"(offset {ptr % BASE_ALIGN} bytes): pass a fresh contiguous tensor (e.g. x.contiguous().clone())")
    lay = map_layout(bh, seq, box_rows, head_dim)
    for d in lay.global_dim:
        if not 1 <= d <= MAX_DIM:
            raise TmaError(f"tensor map dims must be in 1..2^32, got {lay.global_dim}")
    for s in lay.global_strides:
        if s % 16 or s >= MAX_STRIDE:
            raise TmaError(f"tensor map strides must be multiples of 16 below 2^40 bytes, got {lay.global_strides}")
    if not 1 <= box_rows <= MAX_BOX_ROWS:
        raise TmaError(f"box rows must be in 1..{MAX_BOX_ROWS}, got {box_rows}")
    if lay.box_dim[0] * ELEMENT_BYTES > SWIZZLE_BYTES:
        raise TmaError(f"a box row of {lay.box_dim[0] * ELEMENT_BYTES} bytes is wider than the {SWIZZLE_BYTES}-byte "
                       "swizzle")
    return lay


def _shape_ptr(t) -> Tuple[int, int, int, int]:
    """(ptr, bh, seq, head_dim) of a contiguous fp16 torch tensor or CuPy array of shape [..., seq, head_dim]."""
    shape = tuple(int(n) for n in t.shape)
    if len(shape) < 2:
        raise TmaError(f"expected [..., seq, {HEAD_DIM}], got shape {shape}")
    if hasattr(t, "data_ptr"):        # torch
        import torch

        if t.dtype != torch.float16:
            raise TmaError(f"expected fp16, got {t.dtype}")
        if not t.is_contiguous():
            raise TmaError("TMA maps here describe contiguous tensors: call .contiguous() first")
        ptr = int(t.data_ptr())
    else:                             # CuPy
        import numpy as np

        if t.dtype != np.float16:
            raise TmaError(f"expected fp16, got {t.dtype}")
        if not t.flags.c_contiguous:
            raise TmaError("TMA maps here describe contiguous arrays: use cupy.ascontiguousarray first")
        ptr = int(t.data.ptr)
    bh = 1
    for n in shape[:-2]:
        bh *= n
    return ptr, bh, shape[-2], shape[-1]


def _encode_bindings(ptr: int, lay: MapLayout):
    from cuda.bindings import driver as cu

    err, tmap = cu.cuTensorMapEncodeTiled(
        cu.CUtensorMapDataType.CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 3, ptr,
        list(lay.global_dim), list(lay.global_strides), list(lay.box_dim), list(lay.element_strides),
        cu.CUtensorMapInterleave.CU_TENSOR_MAP_INTERLEAVE_NONE, cu.CUtensorMapSwizzle.CU_TENSOR_MAP_SWIZZLE_128B,
        cu.CUtensorMapL2promotion.CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
        cu.CUtensorMapFloatOOBfill.CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE)
    if int(err) != 0:
        raise TmaError(f"cuTensorMapEncodeTiled refused {lay}: CUresult {int(err)} ({err})")
    return [int(w) for w in tmap.opaque]


def _encode_ctypes(ptr: int, lay: MapLayout):
    import ctypes

    lib = ctypes.CDLL("libcuda.so.1")
    fn = lib.cuTensorMapEncodeTiled
    fn.restype = ctypes.c_int
    out = (ctypes.c_uint64 * 16)()
    dims = (ctypes.c_uint64 * 3)(*lay.global_dim)
    strides = (ctypes.c_uint64 * 2)(*lay.global_strides)
    box = (ctypes.c_uint32 * 3)(*lay.box_dim)
    estr = (ctypes.c_uint32 * 3)(*lay.element_strides)
    err = fn(ctypes.byref(out), ctypes.c_int(DTYPE_FLOAT16), ctypes.c_uint32(3), ctypes.c_void_p(ptr), dims, strides,
             box, estr, ctypes.c_int(INTERLEAVE_NONE), ctypes.c_int(SWIZZLE_128B), ctypes.c_int(L2_PROMOTION_256B),
             ctypes.c_int(OOB_FILL_ZERO))
    if err != 0:
        raise TmaError(f"cuTensorMapEncodeTiled refused {lay}: CUresult {err}")
    return list(out)


_ENCODE_TILED = []                # libcuda's cuTensorMapEncodeTiled, loaded once


def encode_tiled_fn():
    """``cuTensorMapEncodeTiled`` from ``libcuda`` as a ctypes function (loaded once per process; OSError without a
    driver). Its arguments: (CUtensorMap* out, dtype, rank, void* base, u64 dims[], u64 strides[], u32 box[],
    u32 element_strides[], interleave, swizzle, l2 promotion, oob fill) → CUresult."""
    if not _ENCODE_TILED:
        import ctypes

        fn = ctypes.CDLL("libcuda.so.1").cuTensorMapEncodeTiled
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_void_p,
                       ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int]
        _ENCODE_TILED.append(fn)
    return _ENCODE_TILED[0]


class MapEncoder:
    """Encodes the map of one layout into the 128 bytes at ``addr`` (64-byte aligned, owned by the caller), for any
    base pointer: ``encoder(ptr)``. The layout's dims, strides and box are ctypes arrays built once; a call checks
    the base's 16-byte alignment (TMA's rule: a clear :class:`TmaError`, never a garbage map) and calls the driver.
    ``encode_tiled``: the driver function (default :func:`encode_tiled_fn`; the CPU tests pass a fake)."""

    __slots__ = ("layout", "addr", "_fn", "_args", "_keep")

    def __init__(self, addr: int, lay: MapLayout, encode_tiled=None):
        import ctypes

        if addr % 64:
            raise TmaError(f"a CUtensorMap must be 64-byte aligned, got address 0x{addr:x}")
        self.layout = lay
        self.addr = int(addr)
        self._fn = encode_tiled if encode_tiled is not None else encode_tiled_fn()
        rank = len(lay.global_dim)
        arrays = ((ctypes.c_uint64 * rank)(*lay.global_dim), (ctypes.c_uint64 * (rank - 1))(*lay.global_strides),
                  (ctypes.c_uint32 * rank)(*lay.box_dim), (ctypes.c_uint32 * rank)(*lay.element_strides))
        self._keep = arrays                                  # the addresses below point into these
        self._args = (rank,) + tuple(ctypes.addressof(a) for a in arrays)

    def __call__(self, ptr: int) -> None:
        if ptr & (BASE_ALIGN - 1):
            raise TmaError(f"TMA needs a {BASE_ALIGN}-byte aligned base address; this tensor starts at 0x{ptr:x} "
                           f"(offset {ptr % BASE_ALIGN} bytes): pass a fresh contiguous tensor (e.g. x.clone())")
        rank, dims, strides, box, estr = self._args             # plain ints: ctypes converts nothing else
        err = self._fn(self.addr, DTYPE_FLOAT16, rank, ptr, dims, strides, box, estr, INTERLEAVE_NONE,
                       SWIZZLE_128B, L2_PROMOTION_256B, OOB_FILL_ZERO)
        if err != 0:
            raise TmaError(f"cuTensorMapEncodeTiled refused {self.layout} at 0x{ptr:x}: CUresult {err}")


def encode_into(addr: int, ptr: int, lay: MapLayout, encode_tiled=None) -> None:
    """Encode the map of ``lay`` at base ``ptr`` into the 128 bytes at ``addr`` (64-byte aligned)."""
    MapEncoder(addr, lay, encode_tiled)(ptr)


ENCODER = {"used": None}          # which path encoded the last map ("cuda.bindings" or "ctypes")


def encode(ptr: int, lay: MapLayout):
    """One map as a 128-byte numpy scalar (pass it as a kernel argument; CuPy copies it by value)."""
    import numpy as np

    try:
        words = _encode_bindings(ptr, lay)
        ENCODER["used"] = "cuda.bindings"
    except (ImportError, AttributeError, TypeError):   # no cuda-bindings, or an API it does not have
        words = _encode_ctypes(ptr, lay)
        ENCODER["used"] = "ctypes"
    blob = np.zeros((), dtype=_map_dtype())
    blob["w"] = np.array(words, dtype=np.uint64)
    return blob[()]


def tensor_map(t, box_rows: int):
    """The map of a contiguous fp16 [..., S, 64] tensor (torch or CuPy) with boxes of ``box_rows`` rows."""
    ptr, bh, seq, d = _shape_ptr(t)
    lay = check_addressable(ptr, bh, seq, box_rows, d)
    return encode(ptr, lay)


def hopper_extra_args(q, k, v, o=None, q_box_rows: int = 64, kv_box_rows: int = 128) -> tuple:
    """Every extra argument a Hopper kernel takes after the common ABI: ``(tma_q, tma_k, tma_v)``.

    The box heights come from the kernel (its exported ``<entry>_q_box_rows`` / ``<entry>_kv_box_rows``): 64 rows of
    Q per consumer warpgroup, one key tile of K and of V. ``o`` is checked (shape, contiguity) but needs no map: the
    kernels store the output with ordinary 16-byte stores. Watchdog builds add ``(buffer, budget)`` after these
    (flashcore/watchdog.py).
    """
    _, bh_q, sq, _ = _shape_ptr(q)
    _, bh_k, skv, _ = _shape_ptr(k)
    _, bh_v, skv_v, _ = _shape_ptr(v)
    if (bh_k, skv) != (bh_v, skv_v) or bh_q != bh_k:
        raise TmaError(f"q [{bh_q}, {sq}], k [{bh_k}, {skv}], v [{bh_v}, {skv_v}]: batch·heads and key lengths differ")
    if o is not None:
        _, bh_o, so, _ = _shape_ptr(o)
        if (bh_o, so) != (bh_q, sq):
            raise TmaError(f"o [{bh_o}, {so}] does not match q [{bh_q}, {sq}]")
    return tensor_map(q, q_box_rows), tensor_map(k, kv_box_rows), tensor_map(v, kv_box_rows)


def hopper_grid(block_m: int, bh: int, seq_q: int, num_sms: int, persistent: bool) -> int:
    """CTAs to launch: one per (head, block of ``block_m`` query rows), or at most one per SM when persistent."""
    tiles = bh * ((seq_q + block_m - 1) // block_m)
    return max(1, min(num_sms, tiles)) if persistent else tiles


def watchdog_slots(grid: int) -> int:
    """(CTA, warp) record slots a watchdog buffer needs: 16 per CTA (flashcore/watchdog.py's layout)."""
    return grid * 16


def map_words(blob) -> Sequence[int]:
    """The 16 64-bit words of an encoded map (for tests and logs)."""
    return [int(w) for w in blob["w"]]


def __getattr__(name):            # TMA_MAP_DTYPE without importing numpy at module import
    if name == "TMA_MAP_DTYPE":
        return _map_dtype()
    raise AttributeError(name)


__all__ = ["TmaError", "MapLayout", "map_layout", "check_addressable", "tensor_map", "hopper_extra_args",
           "hopper_grid", "encode", "encode_into", "MapEncoder", "encode_tiled_fn", "ENCODER", "TMA_MAP_DTYPE", "watchdog_slots", "map_words"]
