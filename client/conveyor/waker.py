"""The locker's alarm clock: a socket pair any thread can write to, so the
locker wakes out of ``select()`` at once (a result to resolve, a stop)."""

from __future__ import annotations

import contextlib
import socket

__all__ = ["Waker"]


class Waker:
    """A socket pair: any thread can wake the locker out of ``select()``."""

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)

    def wake(self) -> None:
        with contextlib.suppress(OSError):  # full (the locker wakes anyway) or closed
            self._writer.send(b"\0")

    def fileno(self) -> int:
        return self._reader.fileno()

    def drain(self) -> None:
        try:
            while self._reader.recv(4096):
                pass
        except OSError:
            pass

    def close(self) -> None:
        self._reader.close()
        self._writer.close()
