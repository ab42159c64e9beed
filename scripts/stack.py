"""Run the docker-compose.yaml topology on this machine, without Docker: ``python scripts/stack.py up|down|status``.

``up`` starts, each on a free loopback port: PostgreSQL (metadata database, its own data dir),
Redis (Celery broker), SeaweedFS (S3, with the raw/lake/exports buckets), then ``airflow db
migrate`` (what the compose file's airflow-init does), the api-server, scheduler, dag-processor,
triggerer and N Celery workers, and waits until every one of them is ready. Everything it starts
is recorded in ``<state>/state.json`` (pids, ports, log files) as soon as it starts, so ``down``
stops exactly that, also after a failed ``up``. Secrets (database, Redis and S3 passwords, the API
user's password) are generated per state folder and kept in files readable only by their owner.

PostgreSQL refuses to run as root: when started as root, initdb and postgres run as the
``postgres`` user (Debian's package creates it), which owns the data directory.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__" and str(REPO) not in sys.path:  # run as `python scripts/stack.py`
    sys.path.insert(0, str(REPO))

from scripts import devservices  # noqa: E402 (after the path above)
from scripts.devservices import ServiceError, alive, free_port, port_open  # noqa: E402

DEFAULT_STATE = REPO / ".stack"
ROOTS = {
    "AUDIT_RAW_ROOT": "s3://audit-raw/raw",
    "AUDIT_LAKE_ROOT": "s3://audit-lake/lake",
    "AUDIT_EXPORT_ROOT": "s3://audit-exports/exports",
}  # as in docker-compose.yaml
BUCKETS = [url.split("/")[2] for url in ROOTS.values()]
API_USER = "audit"
S3_REGION = "us-east-1"
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
# Outside settings that would point a component somewhere else; the stack sets its own.
FOREIGN_PREFIXES = ("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_HOME", "AUDIT_", "AWS_")
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
# Airflow's log servers bind every interface, and nothing needs them here: all processes share one
# log folder, which the api-server reads directly. So workers and the triggerer start without them.
SKIP_SERVE_LOGS = {"worker": ["--skip-serve-logs"], "triggerer": ["--skip-serve-logs"]}
STOP_SIGNAL = {"postgres": signal.SIGINT}  # SIGINT is PostgreSQL's "fast" shutdown; the rest take SIGTERM


class StackError(ServiceError):
    """The stack could not be started or stopped; the message says which service and where its log is."""


# --- small utilities ---------------------------------------------------------------------------


def wait_for(check: Callable[[], bool], what: str, timeout: float, service: Service | None = None) -> None:
    """devservices.wait_for on ``service``; its failure names the service and ends with its log's tail."""
    try:
        devservices.wait_for(check, what, timeout, service.pid if service else None, service.log if service else None)
    except ServiceError as exc:
        tail = f"\n{service.tail()}" if service else ""
        raise StackError(f"{service.name + ': ' if service else ''}{exc}{tail}") from None


def http_json(url: str, timeout: float = 5) -> dict | None:
    """GET ``url`` and decode its JSON, or None if it is not (yet) answering."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.load(response)
    except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
        return None


def write_secret(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner can read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


# --- state -------------------------------------------------------------------------------------


@dataclass
class Service:
    """One started process: its name, pid (also its process group), log file and stop signal."""

    name: str
    pid: int
    log: str

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(Path(self.log).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class State:
    """What ``up`` started and where; persisted as ``state.json`` after every change."""

    root: Path
    ports: dict[str, int] = field(default_factory=dict)
    services: list[Service] = field(default_factory=list)
    paths: dict[str, str] = field(default_factory=dict)

    @property
    def file(self) -> Path:
        return self.root / "state.json"

    def save(self) -> None:
        data = {"ports": self.ports, "paths": self.paths, "services": [vars(s) for s in self.services]}
        self.file.write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, root: Path) -> State:
        state = cls(root)
        if state.file.exists():
            data = json.loads(state.file.read_text())
            state.ports, state.paths = data["ports"], data["paths"]
            state.services = [Service(**s) for s in data["services"]]
        return state

    def start(self, name: str, argv: list[str], env: dict[str, str], user: str | None = None) -> Service:
        """Start ``argv`` in its own session (so ``down`` can stop its children too), logging to logs/.

        ``user``: run as this user instead (only root can); it starts in ``/``, which it can enter.
        """
        log = self.root / "logs" / f"{name}.log"
        proc = devservices.start_in_own_group(argv, env, log, cwd="/" if user else self.root, user=user)
        service = Service(name, proc.pid, str(log))
        self.services.append(service)
        self.save()
        return service


def load_secrets(root: Path) -> dict[str, str]:
    """This state folder's generated passwords and keys (made once, then reused)."""
    path = root / "secrets.json"
    if path.exists():
        return json.loads(path.read_text())
    from cryptography.fernet import Fernet

    values = {
        name: secrets.token_urlsafe(24)
        for name in ("postgres", "redis", "s3_secret", "api_password", "jwt_secret", "api_secret_key")
    }
    values["s3_key"] = "audit" + secrets.token_hex(6)
    values["fernet_key"] = Fernet.generate_key().decode()
    write_secret(path, json.dumps(values, indent=2))
    return values


# --- PostgreSQL ---------------------------------------------------------------------------------


def postgres_user() -> str | None:
    """The user to run PostgreSQL as: ``postgres`` when we are root (it refuses root), else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise StackError("running as root needs the 'postgres' user (apt-get install postgresql)") from None
    return "postgres"


def reachable_by_others(path: Path) -> bool:
    """Whether every directory above ``path`` lets other users through (the postgres user must be)."""
    return all(p.stat().st_mode & 0o001 for p in path.resolve().parents)


def postgres_data_dir(state: State) -> Path:
    """The data directory: inside the state folder, or in /tmp when another user cannot reach that."""
    if "pgdata" in state.paths:
        return Path(state.paths["pgdata"])
    base = state.root
    if postgres_user() is not None and not reachable_by_others(state.root / "postgres"):
        base = Path(tempfile.mkdtemp(prefix="audit-stack-pg-"))
        base.chmod(0o711)  # mkdtemp makes it 0700; the postgres user only needs to pass through
    state.paths["pgdata"] = str(base / "postgres")
    state.save()
    return Path(state.paths["pgdata"])


def init_postgres(data: Path, password: str, user: str | None) -> None:
    """initdb with a password-protected ``airflow`` superuser, once."""
    if (data / "PG_VERSION").exists():
        return
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    pwfile = data.parent / ".pgpass-init"
    pwfile.write_text(password + "\n")
    try:
        if user:
            for p in (data, pwfile):
                shutil.chown(p, user, user)
        subprocess.run(
            [
                devservices.postgres_bin("initdb"),
                "-D",
                str(data),
                "-U",
                "airflow",
                f"--pwfile={pwfile}",
                "-A",
                "scram-sha-256",
                "-E",
                "UTF8",
                "--no-instructions",
            ],
            check=True,
            capture_output=True,
            user=user,
            cwd=data.parent,
        )
    except subprocess.CalledProcessError as exc:
        raise StackError(f"initdb failed: {exc.stderr.decode(errors='replace').strip()}") from None
    finally:
        pwfile.unlink(missing_ok=True)


def database_ready(port: int, password: str) -> bool:
    """Whether PostgreSQL accepts our login; creates the ``airflow`` database the first time."""
    import psycopg2

    try:
        conn = psycopg2.connect(
            host="127.0.0.1", port=port, user="airflow", password=password, dbname="postgres", connect_timeout=2
        )
    except psycopg2.OperationalError:
        return False
    conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = 'airflow'")
            if cur.fetchone() is None:
                cur.execute("CREATE DATABASE airflow")
    finally:
        conn.close()
    return True


def start_postgres(state: State, password: str) -> None:
    user = postgres_user()
    data = postgres_data_dir(state)
    init_postgres(data, password, user)
    port = state.ports["postgres"] = free_port()
    service = state.start("postgres", devservices.postgres_argv(data, port), os.environ.copy(), user=user)
    wait_for(lambda: database_ready(port, password), "PostgreSQL to accept logins", 60, service)


# --- Redis and SeaweedFS ------------------------------------------------------------------------


def start_redis(state: State, password: str) -> None:
    redis = devservices.redis_server()
    port = state.ports["redis"] = free_port()
    workdir = state.root / "redis"
    workdir.mkdir(exist_ok=True)
    config = workdir / "redis.conf"  # the password in a private file, not on a command line others can read
    write_secret(config, devservices.redis_config(port, workdir, password))
    service = state.start("redis", [redis, str(config)], os.environ.copy())
    wait_for(lambda: port_open(port), f"Redis on port {port}", 30, service)


def start_seaweedfs(state: State, key: str, secret: str) -> None:
    """``weed mini`` with the raw/lake/exports buckets, waited for until every bucket takes a write."""
    ports = devservices.seaweed_ports()
    state.ports.update({f"seaweed.{name}": port for name, port in ports.items()})
    state.ports["s3"] = ports["s3.port"]
    data = state.root / "seaweedfs"
    data.mkdir(exist_ok=True)
    env = {**clean_environ(), "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}
    service = state.start("seaweedfs", devservices.seaweed_argv(data, ports, BUCKETS), env)
    endpoint = devservices.s3_endpoint(ports)
    wait_for(
        lambda: devservices.buckets_ready(endpoint, key, secret, BUCKETS), "SeaweedFS S3 and its buckets", 90, service
    )


# --- Airflow -----------------------------------------------------------------------------------


def clean_environ() -> dict[str, str]:
    """This process's environment without settings that would point the stack elsewhere."""
    return {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_PREFIXES)}


def airflow_env(state: State, keys: dict[str, str]) -> dict[str, str]:
    """The environment every Airflow component shares: compose's x-airflow-common, with local ports."""
    pg, api, s3 = state.ports["postgres"], state.ports["api"], f"http://127.0.0.1:{state.ports['s3']}"
    home = state.root / "airflow"
    db = f"airflow:{keys['postgres']}@127.0.0.1:{pg}/airflow"
    connection = {
        "conn_type": "aws",
        "login": keys["s3_key"],
        "password": keys["s3_secret"],
        "extra": {"endpoint_url": s3, "region_name": S3_REGION},
    }
    bin_dir = str(Path(sys.executable).parent)
    return {
        **clean_environ(),
        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "GX_ANALYTICS_ENABLED": "false",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",  # a dev stack runs its DAGs at once (README)
        "AIRFLOW__CORE__FERNET_KEY": keys["fernet_key"],
        "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{API_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{db}",
        "AIRFLOW__CELERY__BROKER_URL": f"redis://:{keys['redis']}@127.0.0.1:{state.ports['redis']}/0",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{db}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api}",
        "AIRFLOW__API__SECRET_KEY": keys["api_secret_key"],
        "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(state.ports["scheduler-health"]),
        "AUDIT_S3_CONN_ID": "audit_s3",
        "AIRFLOW_CONN_AUDIT_S3": json.dumps(connection),  # inside Airflow, the only S3 credentials
        **ROOTS,
    }


def command_line_env(state: State, keys: dict[str, str]) -> dict[str, str]:
    """The standard variables that point ``python -m include.audit`` (outside Airflow) at this S3."""
    return {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{state.ports['s3']}",
        "AWS_ACCESS_KEY_ID": keys["s3_key"],
        "AWS_SECRET_ACCESS_KEY": keys["s3_secret"],
        "AWS_REGION": S3_REGION,
    }


def write_env_file(path: Path, env: dict[str, str]) -> None:
    """A private shell file to ``source``: the stack's Airflow settings and the command line's S3 variables."""
    write_secret(
        path, "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items() if k.startswith(FOREIGN_PREFIXES))
    )


def run_init(state: State, env: dict[str, str]) -> None:
    """What compose's airflow-init does: migrate the metadata database (idempotent)."""
    log = state.root / "logs" / "airflow-init.log"
    with open(log, "ab") as out:
        result = subprocess.run(
            ["airflow", "db", "migrate"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=state.root,
            timeout=600,
        )
    if result.returncode:
        raise StackError(f"airflow db migrate failed; see {log}")


def write_api_password(env: dict[str, str], password: str) -> None:
    """The SimpleAuthManager passwords file, written before the api-server reads it (it keeps ours)."""
    write_secret(Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]), json.dumps({API_USER: password}))


def healthy(api_port: int, components: tuple[str, ...]) -> bool:
    """Whether the api-server reports the database and ``components`` (by heartbeat) healthy."""
    health = http_json(f"http://127.0.0.1:{api_port}/api/v2/monitor/health")
    if not health:
        return False
    return all(health.get(name, {}).get("status") == "healthy" for name in ("metadatabase", *components))


def log_says(service: Service, text: str) -> Callable[[], bool]:
    return lambda: text in Path(service.log).read_text(errors="replace")


def start_airflow(state: State, env: dict[str, str], workers: int, api_workers: int) -> None:
    """The api-server, scheduler, dag-processor, triggerer and ``workers`` Celery workers, waited for."""
    api = state.start(
        "airflow-apiserver",
        ["airflow", "api-server", "-H", "127.0.0.1", "-p", str(state.ports["api"]), "-w", str(api_workers)],
        env,
    )
    for command in COMPONENTS[1:]:
        state.start(f"airflow-{command}", ["airflow", command, *SKIP_SERVE_LOGS.get(command, [])], env)
    started = [
        state.start(
            f"airflow-worker-{number}",
            ["airflow", "celery", "worker", "-H", f"worker{number}@%h", *SKIP_SERVE_LOGS["worker"]],
            env,
        )
        for number in range(1, workers + 1)
    ]
    for worker in started:
        wait_for(log_says(worker, " ready."), f"{worker.name} to join the broker", 180, worker)
    checks = ("scheduler", "triggerer", "dag_processor")
    wait_for(lambda: healthy(state.ports["api"], checks), "the api-server to report every component healthy", 180, api)


# --- commands ----------------------------------------------------------------------------------


def up(root: Path, workers: int = 2, api_workers: int = 1) -> dict:
    """Start everything (see the module docstring); returns the summary that ``status`` prints."""
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    state = State.load(root)
    if any(alive(s.pid) for s in state.services):
        raise StackError(f"a stack is already running from {root}; run `make stack-down` first")
    state.services = []
    keys = load_secrets(root)
    try:
        start_postgres(state, keys["postgres"])
        start_redis(state, keys["redis"])
        start_seaweedfs(state, keys["s3_key"], keys["s3_secret"])
        state.ports.update({name: free_port() for name in ("api", "scheduler-health")})
        env = airflow_env(state, keys)
        write_env_file(root / "airflow.env", {**env, **command_line_env(state, keys)})
        state.save()
        write_api_password(env, keys["api_password"])
        run_init(state, env)
        start_airflow(state, env, workers, api_workers)
    except BaseException:
        down(root)
        raise
    return summary(state)


def summary(state: State) -> dict:
    """Where things are, for people and for tests (no secrets: those stay in their files)."""
    return {
        "state_dir": str(state.root),
        "api_url": f"http://127.0.0.1:{state.ports['api']}" if "api" in state.ports else None,
        "api_user": API_USER,
        "api_password_file": str(state.root / "airflow" / "passwords.json"),
        "s3_endpoint": f"http://127.0.0.1:{state.ports['s3']}" if "s3" in state.ports else None,
        "roots": ROOTS,
        "environment_file": str(state.root / "airflow.env"),
        "services": {s.name: {"pid": s.pid, "running": alive(s.pid), "log": s.log} for s in state.services},
    }


def stop(services: list[Service], timeout: float = 30) -> None:
    """Stop ``services`` together, each with its process group: its signal, then SIGKILL after ``timeout``."""
    devservices.stop_groups({s.pid: STOP_SIGNAL.get(s.name, signal.SIGTERM) for s in services}, timeout)


def down(root: Path) -> dict:
    """Stop what ``up`` started: the Airflow processes first, then the stores they write to."""
    state = State.load(root.resolve())
    stores = ("postgres", "redis", "seaweedfs")
    stop([s for s in state.services if s.name not in stores])
    stop([s for s in state.services if s.name in stores])
    return summary(state)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/stack.py", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE, help="default: ./.stack")
    parser.add_argument("--workers", type=int, default=2, help="Celery workers (default 2)")
    parser.add_argument("--api-workers", type=int, default=1, help="api-server worker processes (default 1)")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            result = up(args.state_dir, args.workers, args.api_workers)
        elif args.command == "down":
            result = down(args.state_dir)
        else:
            result = summary(State.load(args.state_dir.resolve()))
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
