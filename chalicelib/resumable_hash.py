"""SHA-256 and SHA-512 whose state can be saved after a chunk and resumed by another Lambda
instance.

An upload's chunks may reach different instances (API Gateway spreads concurrent requests), so
the running hash must travel with the session, or the commit has to read the whole blob back
from S3. hashlib cannot export its state; PyPI's `rehash` resumes to wrong digests on OpenSSL 3
and `sha256` (Cython) runs about 10x slower than hashlib.

So this module calls OpenSSL's own SHA-256 and SHA-512 through ctypes, the same libcrypto that
Python's hashlib is linked against (no new dependency for the Lambda package). Its low-level API
keeps the state in plain C structs declared in the public header openssl/sha.h:

    SHA256_CTX: unsigned int h[8]; unsigned int Nl, Nh; unsigned int data[16]; unsigned int num, md_len;
    SHA512_CTX: SHA_LONG64 h[8]; SHA_LONG64 Nl, Nh; union { SHA_LONG64 d[16]; unsigned char p[128]; } u;
                unsigned int num, md_len;

The struct's bytes (112 and 216) are the saved state, after a tag naming the algorithm. The functions are marked deprecated in OpenSSL 3 but
exported and supported; they run at hashlib's speed (SHA extensions). A state is checked before
it is handed to OpenSSL (its algorithm must be the one asked for, its byte count the session's
offset, `num` under the block size), so a stale or damaged state is refused, never trusted. Where libcrypto cannot be found,
`available()` is False and callers fall back to reading the blob back.
"""
from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from typing import Optional


class _Sha256Ctx(ctypes.Structure):
    _fields_ = [("h", ctypes.c_uint * 8), ("Nl", ctypes.c_uint), ("Nh", ctypes.c_uint),
                ("data", ctypes.c_uint * 16), ("num", ctypes.c_uint), ("md_len", ctypes.c_uint)]


class _Sha512Ctx(ctypes.Structure):
    _fields_ = [("h", ctypes.c_uint64 * 8), ("Nl", ctypes.c_uint64), ("Nh", ctypes.c_uint64),
                ("u", ctypes.c_uint64 * 16), ("num", ctypes.c_uint), ("md_len", ctypes.c_uint)]


@dataclass(frozen=True)
class _Algorithm:
    name: str
    ctx: type
    prefix: str          # OpenSSL's function names: <prefix>_Init, _Update, _Final
    block: int
    digest_size: int
    length_bits: int     # width of Nl (and Nh): the bit count is (Nh << width) | Nl
    tag: bytes           # the saved state's first bytes


ALGORITHMS = {a.name: a for a in (
    _Algorithm("sha256", _Sha256Ctx, "SHA256", 64, 32, 32, b"S256v1"),
    _Algorithm("sha512", _Sha512Ctx, "SHA512", 128, 64, 64, b"S512v1"),
)}

_lib = None
_lib_lock = threading.Lock()
_lib_missing = False


def _libcrypto():
    """libcrypto as loaded by hashlib (dlsym searches _hashlib's dependencies), else by name."""
    global _lib, _lib_missing
    if _lib is None and not _lib_missing:
        with _lib_lock:
            if _lib is None and not _lib_missing:
                _lib = _load() or None
                _lib_missing = _lib is None
    return _lib


def _load():
    candidates = []
    try:
        import _hashlib
        candidates.append(_hashlib.__file__)
    except (ImportError, AttributeError):
        pass
    import ctypes.util
    found = ctypes.util.find_library("crypto")
    if found:
        candidates.append(found)
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
            for algorithm in ALGORITHMS.values():
                _declare(lib, algorithm)
        except (OSError, AttributeError):
            continue
        return lib
    return None


def _declare(lib, algorithm: _Algorithm) -> None:
    ctx = ctypes.POINTER(algorithm.ctx)
    init, update, final = (getattr(lib, f"{algorithm.prefix}_{name}")
                           for name in ("Init", "Update", "Final"))
    init.argtypes = [ctx]
    update.argtypes = [ctx, ctypes.c_char_p, ctypes.c_size_t]
    final.argtypes = [ctypes.c_char_p, ctx]
    for function in (init, update, final):
        function.restype = ctypes.c_int


def available() -> bool:
    return _libcrypto() is not None


class InvalidState(ValueError):
    """A saved state that does not describe `offset` bytes of the algorithm asked for."""


class ResumableHash:
    """`update`, `hexdigest` like hashlib's; `state()` and `resume(state, offset)` to travel.
    `ResumableHash("sha512")` for SHA-512; SHA-256 by default."""

    def __init__(self, algorithm: str = "sha256", ctx: Optional[ctypes.Structure] = None) -> None:
        self._lib = _libcrypto()
        if self._lib is None:
            raise RuntimeError("libcrypto is not available")
        self._algorithm = ALGORITHMS[algorithm]
        if ctx is None:
            ctx = self._algorithm.ctx()
            self._call("Init", ctypes.byref(ctx))
        self._ctx = ctx

    def _call(self, name: str, *args) -> None:
        getattr(self._lib, f"{self._algorithm.prefix}_{name}")(*args)

    @property
    def algorithm(self) -> str:
        return self._algorithm.name

    @property
    def size(self) -> int:
        """Bytes hashed so far."""
        return ((self._ctx.Nh << self._algorithm.length_bits) | self._ctx.Nl) // 8

    def update(self, data: bytes) -> None:
        if data:
            self._call("Update", ctypes.byref(self._ctx), data, len(data))

    def hexdigest(self) -> str:
        ctx = self._algorithm.ctx.from_buffer_copy(bytes(self._ctx))   # Final consumes it
        out = ctypes.create_string_buffer(self._algorithm.digest_size)
        self._call("Final", out, ctypes.byref(ctx))
        return out.raw.hex()

    def state(self) -> bytes:
        return self._algorithm.tag + bytes(self._ctx)

    @classmethod
    def resume(cls, state: bytes, offset: int) -> "ResumableHash":
        """The hash saved by `state()`, which must have hashed exactly `offset` bytes."""
        algorithm = next((a for a in ALGORITHMS.values() if state.startswith(a.tag)), None)
        if algorithm is None or len(state) != len(algorithm.tag) + ctypes.sizeof(algorithm.ctx):
            raise InvalidState("not a saved hash state of this version")
        ctx = algorithm.ctx.from_buffer_copy(state[len(algorithm.tag):])
        bits = (ctx.Nh << algorithm.length_bits) | ctx.Nl
        if ctx.num >= algorithm.block or ctx.md_len != algorithm.digest_size \
                or bits != offset * 8 or ctx.num != offset % algorithm.block:
            raise InvalidState(f"the saved state does not describe {offset} bytes")
        return cls(algorithm.name, ctx)
