"""A real S3 server for the tests: SeaweedFS (``weed mini``) on loopback, launched by scripts/devservices.py.

Every port it would open is a free one picked there, so parallel runs never collide. It creates its
S3 identity from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in its environment (without one it
refuses multipart uploads). Registered in conftest.py as a pytest plugin.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from scripts import devservices
from scripts.devservices import free_port_pairs, weed_binary  # noqa: F401 (this module's API for tests)

ACCESS_KEY = "audit-test-access-" + uuid.uuid4().hex[:8]
SECRET_KEY = "audit-test-secret-" + uuid.uuid4().hex
BUCKET = "audit-test"
GRPC_OFFSET = devservices.SEAWEED_GRPC_OFFSET
STARTUP_SECONDS = 90.0


def port_flags() -> dict[str, int]:
    """Every port flag of ``weed mini``: free HTTP ports, each gRPC port at HTTP + 10000."""
    return devservices.seaweed_ports()


def credentials_env(endpoint: str) -> dict[str, str]:
    """The standard variables that point boto (and so s3fs) at this server."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": "us-east-1",
    }


@dataclass
class SeaweedS3:
    """One ``weed mini`` process with its data directory; can be killed and started again on the same ports."""

    data_dir: Path
    ports: dict[str, int] = field(default_factory=port_flags)
    process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return devservices.s3_endpoint(self.ports)

    @property
    def env(self) -> dict[str, str]:
        return credentials_env(self.endpoint)

    def command(self) -> list[str]:
        return devservices.seaweed_argv(self.data_dir, self.ports, [BUCKET])

    def start(self) -> None:
        """Start the server and wait until its S3 API takes a write in the test bucket."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                start_new_session=True,
            )
        self.wait_ready()

    def wait_ready(self) -> None:
        devservices.wait_for(
            lambda: devservices.buckets_ready(self.endpoint, ACCESS_KEY, SECRET_KEY, [BUCKET]),
            f"SeaweedFS S3 at {self.endpoint}",
            STARTUP_SECONDS,
            self.process.pid if self.process else None,
            f"{self.data_dir}.log",
        )

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
