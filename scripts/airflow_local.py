"""``make airflow``: what ``airflow standalone`` runs, on loopback only, sized to this machine, and
stopped completely by Ctrl-C (SIGINT) or SIGTERM.

``airflow standalone`` cannot do three of those: its scheduler and triggerer start log servers
on every interface (not configurable), LocalExecutor starts ``[core] parallelism`` workers (32
by default, whatever the cores), and stopping it leaves processes behind. So this starts the same
components itself: ``airflow db migrate``, then the api-server on 127.0.0.1, the scheduler, the
dag-processor and the triggerer, without log servers (they share one log folder the api-server
reads directly), each in its own process group. On a signal, or when a component dies, every
group and every process that left one is stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__" and str(REPO) not in sys.path:  # run as `python scripts/airflow_local.py`
    sys.path.insert(0, str(REPO))

from scripts import devservices  # noqa: E402 (after the path above)

COMPONENTS = {
    "scheduler": ["scheduler", "--skip-serve-logs"],
    "dag-processor": ["dag-processor"],
    "triggerer": ["triggerer", "--skip-serve-logs"],
}
HEALTH_CHECKS = ("metadatabase", "scheduler", "triggerer", "dag_processor")
START_SECONDS = 300


def parallelism() -> int:
    """LocalExecutor workers: one per core (at least 2), unless AIRFLOW__CORE__PARALLELISM says otherwise."""
    return max(2, os.cpu_count() or 2)


def airflow_env(host: str, port: int) -> dict[str, str]:
    """This environment plus the settings ``make airflow`` needs (the caller's own settings win)."""
    defaults = {
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(parallelism()),
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__API__BASE_URL": f"http://{host}:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{host}:{port}/execution/",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": host,
        "GX_ANALYTICS_ENABLED": "false",
    }
    bin_dir = str(Path(sys.executable).parent)
    env = {**defaults, **os.environ, "AIRFLOW__API__HOST": host, "AIRFLOW__API__PORT": str(port)}
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def healthy(base: str) -> bool:
    """Whether the api-server reports the database and every component healthy."""
    try:
        with urllib.request.urlopen(f"{base}/api/v2/monitor/health", timeout=5) as response:
            health = json.load(response)
    except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
        return False
    return all((health.get(name) or {}).get("status") == "healthy" for name in HEALTH_CHECKS)


def password_line(env: dict[str, str]) -> str:
    """Where the admin password is (SimpleAuthManager generates it on first start)."""
    home = Path(env.get("AIRFLOW_HOME", Path.home() / "airflow"))
    path = (
        env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
        or home / "simple_auth_manager_passwords.json.generated"
    )
    return f"user admin, password in {path}"


class Supervisor:
    """The components of one ``make airflow``, started and stopped together."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.processes: dict[str, subprocess.Popen] = {}
        self.stopping = False

    def start(self, name: str, args: list[str]) -> None:
        self.processes[name] = devservices.start_in_own_group(["airflow", *args], self.env, self.logs / f"{name}.log")

    def dead(self) -> str | None:
        """The first component that exited, if any."""
        return next((name for name, proc in self.processes.items() if proc.poll() is not None), None)

    def stop(self) -> None:
        devservices.stop_groups({proc.pid: signal.SIGTERM for proc in self.processes.values()}, timeout=30)
        for proc in self.processes.values():
            proc.wait()

    def on_signal(self, signum: int, frame: object) -> None:
        self.stopping = True


def say(message: str) -> None:
    print(f"airflow-local | {message}", flush=True)


def run(host: str, port: int) -> int:
    env = airflow_env(host, port)
    home = Path(env.get("AIRFLOW_HOME", Path.home() / "airflow"))
    supervisor = Supervisor(env, home / "logs" / "make-airflow")
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, supervisor.on_signal)
    base = f"http://{host}:{port}"
    try:
        say(f"migrating the metadata database in {home}")
        migrate = subprocess.run(["airflow", "db", "migrate"], env=env, capture_output=True, text=True)
        if migrate.returncode:
            say(f"airflow db migrate failed:\n{migrate.stderr[-3000:]}")
            return 1
        if supervisor.stopping:
            return 0
        supervisor.start("api-server", ["api-server", "-H", host, "-p", str(port)])
        for name, args in COMPONENTS.items():
            supervisor.start(name, args)
        say(f"starting (parallelism {env['AIRFLOW__CORE__PARALLELISM']}); logs in {supervisor.logs}")
        deadline, ready = time.monotonic() + START_SECONDS, False
        while not supervisor.stopping:
            if (name := supervisor.dead()) is not None:
                say(f"{name} exited; see {supervisor.logs / (name + '.log')}")
                return 1
            if not ready and healthy(base):
                ready = True
                say(f"ready: {base} ({password_line(env)}); Ctrl-C stops everything")
            if not ready and time.monotonic() > deadline:
                say(f"not healthy after {START_SECONDS}s; see {supervisor.logs}")
                return 1
            time.sleep(0.5)
        say("stopping")
        return 0
    finally:
        supervisor.stop()
        say("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/airflow_local.py", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="api-server address (default: loopback only)")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    return run(args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())
