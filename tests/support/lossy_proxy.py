"""A TCP forwarder to S3 that loses the answer to one request after S3 has acted on it.

Why: a conditional PUT whose response is lost is retried by botocore, and the retry meets the first
attempt's own write (412). That only happens on a real network, so the tests make one: the request
reaches the real SeaweedFS, its response is read and dropped, and the client's connection is closed.
"""

from __future__ import annotations

import socket
import threading


class ResponseLosingProxy:
    def __init__(self, target_port: int, host: str = "127.0.0.1"):
        self.target = (host, target_port)
        self._server = socket.create_server((host, 0))
        self.port = self._server.getsockname()[1]
        self._marker: bytes | None = None
        self.lost = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def lose_next_answer(self, request_start: bytes) -> None:
        """Lose the response to the next request that starts with these bytes (e.g. b"PUT /bucket/key"), once."""
        with self._lock:
            self._marker = request_start

    def close(self) -> None:
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target, timeout=10)
            doomed = threading.Event()
            threading.Thread(target=self._requests, args=(client, upstream, doomed), daemon=True).start()
            threading.Thread(target=self._responses, args=(upstream, client, doomed), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket, doomed: threading.Event) -> None:
        try:
            while data := client.recv(65536):
                with self._lock:
                    if self._marker is not None and data.startswith(self._marker):
                        self._marker = None
                        doomed.set()  # before forwarding: the answer cannot overtake the flag
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            _close(upstream)

    def _responses(self, upstream: socket.socket, client: socket.socket, doomed: threading.Event) -> None:
        try:
            while data := upstream.recv(65536):
                if doomed.is_set() and data.startswith(b"HTTP/1.1 100"):  # botocore's Expect: 100-continue:
                    interim, _, data = data.partition(b"\r\n\r\n")      # S3 has not acted yet, let the body go
                    client.sendall(interim + b"\r\n\r\n")
                    if not data:
                        continue
                if doomed.is_set():  # the final answer: S3 has acted, so drop it and the connection
                    self.lost += 1
                    break
                client.sendall(data)
        except OSError:
            pass
        finally:
            _close(client)
            _close(upstream)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
