"""docker-compose.yaml, checked without Docker: every Airflow command is one the installed CLI accepts,
and the shared environment wires one database, one broker, the S3 roots and connection everywhere."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from scripts import stack

REPO = Path(__file__).resolve().parents[1]
INTERPOLATION = re.compile(r"\$\$|\$\{([A-Z0-9_]+)(?::([?-])([^}]*))?\}")


def interpolate(value: object) -> object:
    """What docker compose makes of the file: ``${VAR:-default}`` is its default, a required
    ``${VAR:?message}`` (a secret from .env) becomes ``__VAR__``, ``$$`` becomes ``$``."""
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if not isinstance(value, str):
        return value
    return INTERPOLATION.sub(lambda m: "$" if m[0] == "$$" else m[3] if m[2] == "-" else f"__{m[1]}__", value)


COMPOSE = interpolate(yaml.safe_load((REPO / "docker-compose.yaml").read_text()))
SERVICES: dict[str, dict] = COMPOSE["services"]
COMMON = COMPOSE["x-airflow-common"]
AIRFLOW = sorted(name for name, s in SERVICES.items() if s.get("image") == COMMON["image"])
REQUIRED = {
    "postgres",
    "redis",
    "seaweedfs",
    "seaweedfs-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-init",
}
SHARED_KEYS = (
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CELERY__RESULT_BACKEND",
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "AUDIT_RAW_ROOT",
    "AUDIT_LAKE_ROOT",
    "AUDIT_EXPORT_ROOT",
    "AIRFLOW_CONN_AUDIT_S3",
    "PYTHONPATH",
)
VARIABLE = re.compile(r"^__[A-Z0-9_]+__$")  # a required value from .env, e.g. ${REDIS_PASSWORD:?...}
SHELL_BREAKS = {";", "&&", "||", "|", "&"}


def env(service: str) -> dict[str, str]:
    return SERVICES[service].get("environment", {})


def words(command: str | list[str]) -> list[str]:
    return command if isinstance(command, list) else shlex.split(command)


def shell_airflow_calls(script: str) -> list[list[str]]:
    """The arguments of every ``airflow ...`` call in a shell script, one call per line or ``;``/``&&``."""
    calls = []
    for line in script.splitlines():
        tokens = list(shlex.shlex(line, posix=True, punctuation_chars=True))
        for i, token in enumerate(tokens):
            if token == "airflow":
                end = next((j for j in range(i + 1, len(tokens)) if tokens[j] in SHELL_BREAKS), len(tokens))
                calls.append(tokens[i + 1 : end])
    return calls


def airflow_calls(name: str) -> list[list[str]]:
    """Every Airflow CLI invocation of a service: its command (the image's entrypoint runs ``airflow`` with
    it) or the ``airflow`` calls of its shell script, and those of its healthcheck."""
    service = SERVICES[name]
    command = service.get("command", [])
    calls = [words(command)] if "entrypoint" not in service else shell_airflow_calls("\n".join(words(command)))
    test = service.get("healthcheck", {}).get("test", [])
    if test and test[0] == "CMD-SHELL":
        calls += shell_airflow_calls(test[1])
    return calls


def rejected_by_airflow_cli(calls: list[list[str]]) -> list[list[str]]:
    """The calls the installed ``airflow`` argument parser refuses (CeleryExecutor adds ``celery ...``)."""
    program = (
        "import json, sys\n"
        "from airflow.cli import cli_parser\n"
        "parser, bad = cli_parser.get_parser(), []\n"
        "for argv in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        parser.parse_args(argv)\n"
        "    except SystemExit:\n"
        "        bad.append(argv)\n"
        "print(json.dumps(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program, json.dumps(calls)],
        capture_output=True,
        text=True,
        env={**os.environ, "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_compose_has_the_production_services() -> None:
    assert REQUIRED <= set(SERVICES)
    assert {
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-worker",
        "airflow-init",
    } <= set(AIRFLOW)


def test_every_airflow_command_is_a_real_subcommand_of_the_installed_cli() -> None:
    calls = {name: airflow_calls(name) for name in AIRFLOW}
    assert calls["airflow-apiserver"] == [["api-server"]]
    assert calls["airflow-worker"][0] == ["celery", "worker"]
    assert ["version"] in calls["airflow-init"]
    flat = [call for name in AIRFLOW for call in calls[name]]
    # The check itself must be able to say no: Airflow 3 has no webserver, and no celery without its executor.
    assert rejected_by_airflow_cli([*flat, ["webserver"], ["celery", "wrker"]]) == [["webserver"], ["celery", "wrker"]]


def test_worker_healthcheck_names_the_celery_app_that_exists() -> None:
    test = SERVICES["airflow-worker"]["healthcheck"]["test"]
    module, attribute = shlex.split(test[1])[2].rsplit(".", 1)
    result = subprocess.run(
        [sys.executable, "-c", f"import {module} as m; print(type(m.{attribute}).__name__)"],
        capture_output=True,
        text=True,
        env={**os.environ, "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor"},
        timeout=300,
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("Celery"), result.stderr


@pytest.mark.parametrize("key", SHARED_KEYS)
def test_every_airflow_service_shares_the_same_setting(key: str) -> None:
    values = {name: env(name).get(key) for name in AIRFLOW}
    assert set(values.values()) == {COMMON["environment"][key]}, values


def test_executor_database_and_broker_point_at_their_services() -> None:
    common = COMMON["environment"]
    assert common["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    db = urlsplit(common["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    result_db = urlsplit(common["AIRFLOW__CELERY__RESULT_BACKEND"].removeprefix("db+"))
    assert (db.hostname, db.username, db.path) == (
        "postgres",
        env("postgres")["POSTGRES_USER"],
        "/" + env("postgres")["POSTGRES_DB"],
    )
    assert db.password == env("postgres")["POSTGRES_PASSWORD"] and (result_db.netloc, result_db.path) == (
        db.netloc,
        db.path,
    )
    broker = urlsplit(common["AIRFLOW__CELERY__BROKER_URL"])
    assert (broker.scheme, broker.hostname, broker.port) == ("redis", "redis", 6379)
    assert broker.password == SERVICES["redis"]["command"][-1] == env("redis")["REDIS_PASSWORD"]
    api = urlsplit(common["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert (api.hostname, api.port, api.path) == ("airflow-apiserver", 8080, "/execution/")


def test_roots_are_s3_buckets_that_the_init_service_creates() -> None:
    script = "\n".join(SERVICES["seaweedfs-init"]["command"])
    created = set(re.search(r"for bucket in ([^;]+);", script).group(1).split())
    buckets = {urlsplit(env("airflow-worker")[f"AUDIT_{name}_ROOT"]).netloc for name in ("RAW", "LAKE", "EXPORT")}
    assert {urlsplit(env("airflow-worker")[f"AUDIT_{n}_ROOT"]).scheme for n in ("RAW", "LAKE", "EXPORT")} == {"s3"}
    assert buckets == created and len(buckets) == 3
    assert SERVICES["seaweedfs-init"]["depends_on"]["seaweedfs"]["condition"] == "service_healthy"
    for name in AIRFLOW:
        assert SERVICES[name]["depends_on"]["seaweedfs-init"]["condition"] == "service_completed_successfully"


def test_s3_connection_reaches_seaweedfs_with_its_credentials() -> None:
    common = COMMON["environment"]
    assert f"AIRFLOW_CONN_{common['AUDIT_S3_CONN_ID'].upper()}" in common
    conn = json.loads(common["AIRFLOW_CONN_AUDIT_S3"])
    endpoint = urlsplit(conn["extra"]["endpoint_url"])
    assert endpoint.hostname == "seaweedfs" and f"{endpoint.port}" in SERVICES["seaweedfs"]["ports"][0].split(":")
    weed = env("seaweedfs")
    assert (conn["login"], conn["password"]) == (weed["AWS_ACCESS_KEY_ID"], weed["AWS_SECRET_ACCESS_KEY"])
    assert not any(k.startswith("AWS_") for k in common), "inside Airflow, credentials come from the connection"


def test_secrets_are_required_variables_never_literals() -> None:
    common = COMMON["environment"]
    conn = json.loads(common["AIRFLOW_CONN_AUDIT_S3"])
    secrets = [
        common[k] for k in ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET")
    ]
    secrets += [conn["login"], conn["password"], env("postgres")["POSTGRES_PASSWORD"], env("redis")["REDIS_PASSWORD"]]
    secrets += [
        urlsplit(common[k].removeprefix("db+")).password
        for k in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__BROKER_URL")
    ]
    assert all(VARIABLE.match(value) for value in secrets), secrets


def test_published_ports_bind_loopback_and_workers_scale() -> None:
    published = {name: s["ports"] for name, s in SERVICES.items() if "ports" in s}
    assert set(published) >= {"airflow-apiserver", "seaweedfs"}
    assert all(p.startswith("127.0.0.1:") for ports in published.values() for p in ports), published
    worker = SERVICES["airflow-worker"]
    assert "ports" not in worker and "container_name" not in worker  # --scale airflow-worker=N
    assert not any("container_name" in s for s in SERVICES.values())


def test_airflow_services_mount_dags_plugins_and_include_importably() -> None:
    for name in AIRFLOW:
        mounts = {v.split(":")[1]: v.split(":")[0].split("/")[-1] for v in SERVICES[name]["volumes"]}
        for folder in ("dags", "plugins", "include"):
            assert mounts.get(f"/opt/airflow/{folder}") == folder, (name, folder)
        assert "/opt/airflow" in env(name)["PYTHONPATH"].split(":")  # so `import include.audit` works


def test_image_is_the_official_airflow_of_requirements_txt() -> None:
    pinned = re.search(r"^apache-airflow==(\S+)$", (REPO / "requirements.txt").read_text(), re.M).group(1)
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM apache/airflow:(\S+)$", dockerfile, re.M).group(1) == pinned
    assert "requirements.txt" in dockerfile and COMMON["build"] == "."
    assert COMMON["image"].endswith(f":{pinned}")


def test_make_stack_sets_everything_compose_sets() -> None:
    """``make stack`` is the same topology: its Airflow environment has every setting of compose's."""
    state = stack.State(
        Path("/nonexistent"), ports={name: 1 for name in ("postgres", "redis", "s3", "api", "scheduler-health")}
    )
    keys = dict.fromkeys(
        ("postgres", "redis", "s3_key", "s3_secret", "fernet_key", "api_secret_key", "jwt_secret"), "x"
    )
    local = stack.airflow_env(state, keys)
    common = COMMON["environment"]
    assert set(common) - set(local) == set()
    assert not any(k.startswith("AWS_") for k in local), "inside Airflow, credentials come from the connection"
    for key in (
        "AIRFLOW__CORE__EXECUTOR",
        "AIRFLOW__CORE__AUTH_MANAGER",
        "AUDIT_RAW_ROOT",
        "AUDIT_LAKE_ROOT",
        "AUDIT_EXPORT_ROOT",
        "AUDIT_S3_CONN_ID",
    ):
        assert local[key] == common[key], key
    assert (
        json.loads(local["AIRFLOW_CONN_AUDIT_S3"])["extra"].keys()
        == json.loads(common["AIRFLOW_CONN_AUDIT_S3"])["extra"].keys()
    )
