"""Reading a request body in bounded pieces: shared by the local gateway and `berth proxy`."""
from __future__ import annotations

from typing import Iterator

COPY_BYTES = 1024 * 1024


class PieceReader:
    """Mixin over a `read(size) -> bytes` that returns b"" at the end of the body."""

    def read(self, size: int) -> bytes:  # pragma: no cover - provided by the subclass
        raise NotImplementedError

    def read_all(self) -> bytes:
        """The whole rest of the body (only for bodies known to be small)."""
        return b"".join(self.pieces(COPY_BYTES))

    def pieces(self, size: int) -> Iterator[bytes]:
        """The rest of the body in pieces of `size` bytes (the last may be shorter)."""
        while True:
            piece = self.read(size)
            if not piece:
                return
            yield piece
