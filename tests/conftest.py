"""Fixtures shared by the unit tests."""

import socket

import pytest


@pytest.fixture
def no_network(monkeypatch):
    """Fail any connection to a non-loopback address, to prove code stays offline."""
    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and (host.startswith("127.") or host in ("localhost", "::1") or "/" in host):
            return real_connect(self, address)
        raise AssertionError(f"network access attempted: {address}")

    monkeypatch.setattr(socket.socket, "connect", guarded)
    yield
