"""Loaded by every Python process of the end-to-end test (via PYTHONPATH): outbound connections fail.

Loopback stays open because Jupyter kernels (papermill) talk to their client over 127.0.0.1. Anything else — a
Hugging Face Hub download, telemetry — raises, so an accidental network call fails the test.
"""

import socket

_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex


def _allowed(address) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX
        return True
    host = str(address[0])
    return host in ("localhost", "::1", "0.0.0.0") or host.startswith("127.")


class NetworkBlocked(OSError):
    pass


def connect(self, address):
    if not _allowed(address):
        raise NetworkBlocked(f"network access blocked in tests: connect to {address!r}")
    return _connect(self, address)


def connect_ex(self, address):
    if not _allowed(address):
        raise NetworkBlocked(f"network access blocked in tests: connect to {address!r}")
    return _connect_ex(self, address)


def _blocked_getaddrinfo(host, *args, _orig=socket.getaddrinfo, **kwargs):
    if host not in (None, "localhost", "127.0.0.1", "::1", "0.0.0.0") and not str(host).startswith("127."):
        raise NetworkBlocked(f"network access blocked in tests: DNS lookup of {host!r}")
    return _orig(host, *args, **kwargs)


socket.socket.connect = connect
socket.socket.connect_ex = connect_ex
socket.getaddrinfo = _blocked_getaddrinfo
