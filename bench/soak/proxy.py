"""A TCP proxy in front of Redis whose connections can be cut at once, as a network would.

Threads, not asyncio: `reset()` is called from the fault scheduler's thread, and a blocked
`recv` is woken by shutting its socket down from any thread.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

from workers.redis_process import free_port

# SO_LINGER on, zero seconds: close() sends RST and drops what is unsent, as a reset link does.
_ABORT_LINGER = struct.pack("ii", 1, 0)


def abort(sock: socket.socket) -> None:
    """Close with a RST; wakes any thread blocked in recv on it."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORT_LINGER)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)  # wakes recv without sending a FIN
    with contextlib.suppress(OSError):
        sock.close()


class ResettableProxy:
    """Listens on `port` and pipes each connection to 127.0.0.1:`upstream_port`.

    >>> proxy = ResettableProxy(6380); proxy.start(); proxy.reset(); proxy.stop()
    """

    def __init__(self, upstream_port: int, port: int | None = None) -> None:
        self.upstream_port = upstream_port
        self.port = port or free_port()
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        if self._listener is not None:
            abort(self._listener)
            self._listener = None
        self.reset()

    def reset(self) -> int:
        """Cut every open connection, both sides; how many were cut."""
        with self._lock:
            pairs, self._pairs = self._pairs, set()
        for client, upstream in pairs:
            abort(client)
            abort(upstream)
        return len(pairs)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # the listener was closed
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), 1.0)
            except OSError:
                abort(client)  # Redis is down: the client sees its connection refused
                continue
            upstream.settimeout(None)
            pair = (client, upstream)
            with self._lock:
                self._pairs.add(pair)
            for source, sink in (pair, pair[::-1]):
                threading.Thread(target=self._pump, args=(source, sink, pair), daemon=True).start()

    def _pump(
        self,
        source: socket.socket,
        sink: socket.socket,
        pair: tuple[socket.socket, socket.socket],
    ) -> None:
        """Copy one direction until either side ends; then end both."""
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        with self._lock:
            self._pairs.discard(pair)
        abort(source)
        abort(sink)
