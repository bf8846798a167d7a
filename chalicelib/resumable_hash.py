"""SHA-256 whose state can be saved after a chunk and resumed by another Lambda instance.

An upload's chunks may reach different instances (API Gateway spreads concurrent requests), so
the running hash must travel with the session, or the commit has to read the whole blob back
from S3. hashlib cannot export its state; PyPI's `rehash` resumes to wrong digests on OpenSSL 3
and `sha256` (Cython) runs about 10x slower than hashlib.

So this module calls OpenSSL's own SHA-256 through ctypes, the same libcrypto that Python's
hashlib is linked against (no new dependency for the Lambda package). Its low-level API keeps the
state in a plain C struct, SHA256_CTX, declared in the public header openssl/sha.h:

    unsigned int h[8]; unsigned int Nl, Nh; unsigned int data[16]; unsigned int num, md_len;

The struct's 112 bytes are the saved state. The functions are marked deprecated in OpenSSL 3 but
exported and supported; they run at hashlib's speed (SHA extensions). A state is checked before
it is handed to OpenSSL (its byte count must be the session's offset, `num` under the block
size), so a stale or damaged state is refused, never trusted. Where libcrypto cannot be found,
`available()` is False and callers fall back to reading the blob back.
"""
from __future__ import annotations

import ctypes
import threading
from typing import Optional

_BLOCK = 64
_DIGEST_SIZE = 32
_STATE_VERSION = b"S256v1"


class _Sha256Ctx(ctypes.Structure):
    _fields_ = [("h", ctypes.c_uint * 8), ("Nl", ctypes.c_uint), ("Nh", ctypes.c_uint),
                ("data", ctypes.c_uint * 16), ("num", ctypes.c_uint), ("md_len", ctypes.c_uint)]


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
            init, update, final = lib.SHA256_Init, lib.SHA256_Update, lib.SHA256_Final
        except (OSError, AttributeError):
            continue
        init.argtypes = [ctypes.POINTER(_Sha256Ctx)]
        update.argtypes = [ctypes.POINTER(_Sha256Ctx), ctypes.c_char_p, ctypes.c_size_t]
        final.argtypes = [ctypes.c_char_p, ctypes.POINTER(_Sha256Ctx)]
        for function in (init, update, final):
            function.restype = ctypes.c_int
        return lib
    return None


def available() -> bool:
    return _libcrypto() is not None


class InvalidState(ValueError):
    """A saved state that does not describe `offset` bytes of SHA-256."""


class ResumableSha256:
    """`update`, `hexdigest` like hashlib's; `state()` and `resume(state, offset)` to travel."""

    def __init__(self, ctx: Optional[_Sha256Ctx] = None) -> None:
        self._lib = _libcrypto()
        if self._lib is None:
            raise RuntimeError("libcrypto is not available")
        if ctx is None:
            ctx = _Sha256Ctx()
            self._lib.SHA256_Init(ctypes.byref(ctx))
        self._ctx = ctx

    @property
    def size(self) -> int:
        """Bytes hashed so far."""
        return ((self._ctx.Nh << 32) | self._ctx.Nl) // 8

    def update(self, data: bytes) -> None:
        if data:
            self._lib.SHA256_Update(ctypes.byref(self._ctx), data, len(data))

    def hexdigest(self) -> str:
        ctx = _Sha256Ctx.from_buffer_copy(bytes(self._ctx))   # Final consumes the context
        out = ctypes.create_string_buffer(_DIGEST_SIZE)
        self._lib.SHA256_Final(out, ctypes.byref(ctx))
        return out.raw.hex()

    def state(self) -> bytes:
        return _STATE_VERSION + bytes(self._ctx)

    @classmethod
    def resume(cls, state: bytes, offset: int) -> "ResumableSha256":
        """The hash saved by `state()`, which must have hashed exactly `offset` bytes."""
        if not state.startswith(_STATE_VERSION) or \
                len(state) != len(_STATE_VERSION) + ctypes.sizeof(_Sha256Ctx):
            raise InvalidState("not a saved SHA-256 state of this version")
        ctx = _Sha256Ctx.from_buffer_copy(state[len(_STATE_VERSION):])
        bits = (ctx.Nh << 32) | ctx.Nl
        if ctx.num >= _BLOCK or ctx.md_len != _DIGEST_SIZE or bits != offset * 8 \
                or ctx.num != offset % _BLOCK:
            raise InvalidState(f"the saved state does not describe {offset} bytes")
        return cls(ctx)
