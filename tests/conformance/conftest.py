"""Fixtures of the SDK conformance suite: `appendfs serve` processes and SDK clients.

Run:  scripts/setup-python.sh && cargo build && .venv/bin/pytest -q tests/conformance
Env:  APPENDFS_BIN  server binary (default $REPO/target/debug/appendfs)
"""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Dict, List, Optional

import pytest

import support
from support import BUCKET, FLAVORS, Server, ServerStartError, make_client

_startup_failure: Optional[str] = None


class ServerFactory:
    """Starts extra `appendfs serve` processes; every one is killed at session end."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.servers: List[Server] = []
        self._n = 0

    def start(self, *flags: str, data_dir: Optional[Path] = None, memory: Optional[bool] = None,
              buckets: Optional[List[str]] = None, env: Optional[Dict[str, str]] = None,
              name: str = "extra") -> Server:
        """`appendfs serve [--memory | --data-dir DIR] --listen 127.0.0.1:0 --bucket ... FLAGS`."""
        global _startup_failure
        if _startup_failure is not None:
            pytest.fail(_startup_failure, pytrace=False)
        args: List[str] = []
        if data_dir is not None:
            args += ["--data-dir", str(data_dir)]
        elif memory is not False:
            args += ["--memory"]
        args += ["--listen", "127.0.0.1:0"]
        for b in (buckets if buckets is not None else [BUCKET]):
            args += ["--bucket", b]
        args += list(flags)
        self._n += 1
        error = None
        try:
            srv = Server(args, self.log_dir, f"{name}-{self._n}", env=env)
        except ServerStartError as e:
            error = str(e)
            if not support.appendfs_bin().is_file() or name == "main":
                # nothing will work: every later start fails at once with the same message
                _startup_failure = error
        if error is not None:
            pytest.fail(error, pytrace=False)
        self.servers.append(srv)
        return srv

    def close(self) -> None:
        for s in self.servers:
            s.kill()


def pytest_report_header(config):
    b = support.appendfs_bin()
    state = "ok" if b.is_file() else "MISSING: every server test will fail"
    return [f"appendfs server binary: {b} ({state})"]


@pytest.fixture(scope="session")
def server_factory(tmp_path_factory: pytest.TempPathFactory):
    f = ServerFactory(tmp_path_factory.mktemp("server-logs"))
    yield f
    f.close()


@pytest.fixture(scope="session")
def server(server_factory: ServerFactory) -> Server:
    """The shared in-memory server: `serve --memory --listen 127.0.0.1:0 --bucket confbucket`."""
    # a start failure is remembered (see ServerFactory.start), so every test reports the same
    # clear message at once instead of waiting for its own 20 s timeout
    return server_factory.start(name="main")


@pytest.fixture(autouse=True)
def _server_still_alive(request: pytest.FixtureRequest):
    """After each test using the shared server, fail loudly if the server died."""
    yield
    if "server" in request.fixturenames:
        srv: Server = request.getfixturevalue("server")
        if not srv.alive():
            pytest.fail(f"the shared server exited (status {srv.proc.returncode}) during "
                        f"{request.node.nodeid}; stderr tail:\n{srv.stderr_tail()}",
                        pytrace=False)


@pytest.fixture(params=FLAVORS)
def flavor(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def client(server: Server, flavor: str) -> support.Client:
    return make_client(flavor, server.endpoint)


@pytest.fixture
def oss2_v1(server: Server) -> support.Oss2Client:
    return support.Oss2Client(server.endpoint, v4=False)


@pytest.fixture
def oss2_v4(server: Server) -> support.Oss2Client:
    return support.Oss2Client(server.endpoint, v4=True)


@pytest.fixture
def v2(server: Server) -> support.V2Client:
    return support.V2Client(server.endpoint)


@pytest.fixture
def uniq(request: pytest.FixtureRequest) -> str:
    """A key prefix unique to this test, so tests sharing the server never collide."""
    name = request.node.name.replace("[", "-").replace("]", "").replace("/", "_")
    return f"t-{name}-{uuid.uuid4().hex[:8]}/"
