"""Fixtures shared by the unit tests."""

import socket
from pathlib import Path

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


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    """The tiny profile, writing into a scratch folder of this test module."""
    import kdutils as kd

    return kd.get_profile("tiny", output_dir=str(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="module")
def student_dir(cfg):
    """A student checkpoint as kd.distill writes it (untrained: for tests about plumbing)."""
    import kdutils as kd
    from kdutils import distill as D

    tokenizer, student = kd.load_student(cfg, "roberta")
    return D.save_checkpoint(Path(cfg.output_dir) / "best", student, tokenizer,
                             {"experiment": "roberta", "profile": "tiny", "step": 0})
