"""GPU arrays in and out of `target="cuda"` callables, without copies.

An argument that is not a numpy array but lives on a CUDA device is described, not copied:

    __cuda_array_interface__   CuPy, PyTorch (CUDA tensors), PyCUDA GPUArray, Numba
    __dlpack__ / __dlpack_device__   any DLPack producer (device type kDLCUDA or kDLCUDAManaged)

as a `DeviceArray` (pointer, shape, element strides, dtype) that quacks like a numpy array for
the input checks (`ndim`, `shape`, `dtype`), so rank, dtype and sizes are validated exactly as
for numpy inputs. The kernels read it in place through its strides.

Everything here is pure Python (ctypes for the DLPack struct); the parsing is unit-tested on
fake objects and on numpy's own (CPU) DLPack capsules. Untested on real hardware so far.
Streams: kernels are launched on the driver's default stream after the producer's work, which
is ordered for the legacy default stream (CuPy's and PyTorch's defaults); a producer on another
stream must synchronize first (the interface's "stream" key is not honoured yet).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

from ..errors import DTypeError

KDL_CPU, KDL_CUDA, KDL_CUDA_HOST, KDL_CUDA_MANAGED = 1, 2, 3, 13
_DL_CODES = {(0, 8): "i1", (0, 16): "i2", (0, 32): "i4", (0, 64): "i8", (1, 8): "u1", (1, 16): "u2",
             (1, 32): "u4", (1, 64): "u8", (2, 16): "f2", (2, 32): "f4", (2, 64): "f8", (6, 8): "b1"}


@dataclass(frozen=True)
class DeviceArray:
    """A device buffer described by its producer: what the launcher needs, nothing copied."""
    ptr: int
    shape: tuple
    strides: tuple  # in elements
    dtype: np.dtype
    readonly: bool = False
    owner: object = None  # the producer (and a DLPack capsule), kept alive for the call
    device: str = "cuda"

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def is_device_array(x) -> bool:
    if isinstance(x, (np.ndarray, np.generic)):
        return False
    if hasattr(x, "__cuda_array_interface__"):
        return True
    dev = getattr(x, "__dlpack_device__", None)
    if dev is None:
        return False
    try:
        return dev()[0] in (KDL_CUDA, KDL_CUDA_MANAGED)
    except Exception:  # noqa: BLE001 - a producer that cannot say where it lives is not one of ours
        return False


def device_array(x, name: str = "input") -> DeviceArray:
    """`x` described as a DeviceArray; TypeError when it is neither kind of GPU array."""
    cai = getattr(x, "__cuda_array_interface__", None)
    if cai is not None:
        return from_cuda_array_interface(cai, owner=x, name=name)
    if hasattr(x, "__dlpack__"):
        return from_dlpack(x, name=name)
    raise TypeError(f"{name} must be a numpy array or a CUDA array (__cuda_array_interface__ or DLPack), "
                    f"got {type(x).__name__}")


def from_cuda_array_interface(cai: dict, owner=None, name: str = "input") -> DeviceArray:
    """Parse a `__cuda_array_interface__` dict (versions 0-3)."""
    try:
        shape = tuple(int(d) for d in cai["shape"])
        typestr = cai["typestr"]
        ptr, readonly = cai["data"]
    except (KeyError, TypeError, ValueError) as e:
        raise TypeError(f"{name}: malformed __cuda_array_interface__ ({e!r})") from None
    if cai.get("mask") is not None:
        raise TypeError(f"{name}: masked CUDA arrays are not supported")
    dtype = np.dtype(typestr)
    if not dtype.isnative:
        raise DTypeError(f"{name}: byte order {typestr!r} is not native")
    st = cai.get("strides")
    strides = _c_strides(shape) if st is None else _elements(tuple(int(s) for s in st), dtype, name)
    if len(strides) != len(shape):
        raise TypeError(f"{name}: __cuda_array_interface__ has {len(shape)} dimension(s) but {len(strides)} "
                        f"stride(s)")
    return DeviceArray(int(ptr or 0), shape, strides, dtype, bool(readonly), owner)


def _c_strides(shape: tuple) -> tuple:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= max(int(d), 1)
    return tuple(reversed(out))


def _elements(byte_strides: tuple, dtype: np.dtype, name: str) -> tuple:
    if any(s % dtype.itemsize for s in byte_strides):
        raise TypeError(f"{name}: strides {byte_strides} (bytes) are not multiples of the {dtype} item size "
                        f"{dtype.itemsize}; make the array contiguous")
    return tuple(s // dtype.itemsize for s in byte_strides)


# --- DLPack: the C structs of dlpack.h (v0.x, the "dltensor" capsule) ---------------------------
class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int), ("device_id", ctypes.c_int)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class _DLManagedTensor(ctypes.Structure):  # dl_tensor comes first: all we read
    _fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", ctypes.c_void_p)]


def _capsule_pointer(capsule) -> int:
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    return get(capsule, b"dltensor")


def from_dlpack(x, name: str = "input", devices=(KDL_CUDA, KDL_CUDA_MANAGED)) -> DeviceArray:
    """Describe a DLPack producer's tensor. The capsule is not consumed: it stays with the
    DeviceArray (as owner) and its destructor gives the tensor back when the call is over."""
    capsule = x.__dlpack__()
    t = _DLManagedTensor.from_address(_capsule_pointer(capsule)).dl_tensor
    if t.device.device_type not in devices:
        raise TypeError(f"{name}: a DLPack tensor on device type {t.device.device_type}; expected one of "
                        f"{devices} (a CUDA device)")
    key = (t.dtype.code, t.dtype.bits)
    if t.dtype.lanes != 1 or key not in _DL_CODES:
        raise DTypeError(f"{name}: unsupported DLPack dtype (code {t.dtype.code}, {t.dtype.bits} bits, "
                         f"{t.dtype.lanes} lanes)")
    dtype = np.dtype(_DL_CODES[key])
    shape = tuple(t.shape[k] for k in range(t.ndim))
    strides = tuple(t.strides[k] for k in range(t.ndim)) if t.strides else _c_strides(shape)
    ptr = (t.data or 0) + t.byte_offset
    return DeviceArray(int(ptr), shape, strides, dtype, False, (x, capsule),
                       "cuda" if t.device.device_type != KDL_CPU else "cpu")
