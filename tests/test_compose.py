"""docker-compose.yml (production topology) agrees with the code it runs.

- the services of the topology exist, with the images and wiring docs/operations.md describes;
- the api/worker commands point at files that exist;
- every FLYWHEEL_* variable is a field of settings.Settings, and the values are valid settings;
- the hosts and ports in the app's URLs/addresses are compose services listening on them;
- the search attributes registered in production equal the dev server's (spec §8);
- the Dockerfile copies every package pyproject.toml installs.
"""
from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import settings  # noqa: E402
from runtime.devserver import SEARCH_ATTRIBUTES  # noqa: E402

COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

REQUIRED_SERVICES = {
    "postgresql", "temporal", "temporal-setup", "temporal-ui", "chroma", "mailpit", "api", "worker",
}
APP_SERVICES = ("api", "worker")
# Settings that must come from the operator (`${NAME:?message}`), never a value in the file.
OPERATOR_SUPPLIED = {
    "FLYWHEEL_SMTP_FROM", "FLYWHEEL_PUBLIC_URL", "FLYWHEEL_SECRET_KEYS", "FLYWHEEL_LINK_SECRET",
}
# Spec §8: the search attributes of a run, with their Temporal types.
SPEC_SEARCH_ATTRIBUTES = {
    "TenantId": "Keyword",
    "ProcedureId": "Keyword",
    "ProcedureVersion": "Int",
    "CurrentStep": "Keyword",
    "RunStatus": "Keyword",
    "Channel": "Keyword",
}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def env_of(service: dict) -> dict[str, str]:
    """A service's environment as a dict (compose accepts a mapping or a list of K=V)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) for item in env)
        env = {k: v for k, v in pairs}
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def command_text(service: dict) -> str:
    command = service.get("command", "")
    if isinstance(command, list):
        return " ".join(str(part) for part in command)
    return str(command)


def container_ports(service: dict) -> set[int]:
    """Ports a service listens on inside the compose network (`ports` targets and `expose`)."""
    found: set[int] = set()
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):  # long syntax
            found.add(int(entry["target"]))
        else:  # "[ip:][host:]container[/proto]"
            found.add(int(str(entry).split("/")[0].rsplit(":", 1)[-1]))
    for entry in service.get("expose") or []:
        found.add(int(str(entry).split("/")[0]))
    return found


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


# --- services -------------------------------------------------------------------------------


def test_required_services_exist(services):
    missing = REQUIRED_SERVICES - set(services)
    assert not missing, f"docker-compose.yml lacks services {sorted(missing)}"


def test_images(services):
    assert services["postgresql"]["image"] == "postgres:16"
    assert services["temporal"]["image"].startswith("temporalio/auto-setup:")
    assert services["temporal-setup"]["image"].startswith("temporalio/admin-tools:")
    assert services["temporal-ui"]["image"].startswith("temporalio/ui:")
    assert services["chroma"]["image"].startswith("chromadb/chroma")
    assert services["mailpit"]["image"].startswith("axllent/mailpit")
    for name in APP_SERVICES:
        build = services[name].get("build")
        context = build if isinstance(build, str) else (build or {}).get("context")
        assert context == ".", f"{name} must be built from the repo root"


def test_stateful_services_use_named_volumes(compose, services):
    declared = set(compose.get("volumes") or {})
    for name, mount_point in (("postgresql", "/var/lib/postgresql/data"), ("chroma", "/chroma/chroma")):
        mounts = [str(v) for v in services[name].get("volumes") or []]
        matching = [m for m in mounts if m.split(":")[1:2] == [mount_point]]
        assert matching, f"{name} keeps no volume at {mount_point}"
        assert matching[0].split(":")[0] in declared, f"{name}'s volume is not declared at top level"


def test_temporal_uses_the_postgresql_service(services):
    temporal = env_of(services["temporal"])
    postgres = env_of(services["postgresql"])
    assert temporal["DB"] == "postgres12"
    assert temporal["POSTGRES_SEEDS"] == "postgresql"
    assert int(temporal["DB_PORT"]) in container_ports(services["postgresql"])
    assert temporal["POSTGRES_USER"] == postgres["POSTGRES_USER"]
    assert temporal["POSTGRES_PWD"] == postgres["POSTGRES_PASSWORD"]


def test_temporal_ui_and_mailpit_ports(services):
    app_env = env_of(services["api"])
    assert env_of(services["temporal-ui"])["TEMPORAL_ADDRESS"] == app_env["FLYWHEEL_TEMPORAL_ADDRESS"]
    assert 8080 in container_ports(services["temporal-ui"])
    assert {1025, 8025} <= container_ports(services["mailpit"])
    assert 8000 in container_ports(services["api"])


def test_depends_on_is_consistent(services):
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {dep: {"condition": "service_started"} for dep in depends}
        for dep, spec in depends.items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            condition = (spec or {}).get("condition", "service_started")
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy; it has no healthcheck"
    for name in APP_SERVICES:
        depends = services[name]["depends_on"]
        assert depends["postgresql"]["condition"] == "service_healthy"
        # the workflows upsert the search attributes: they must exist before a worker runs
        assert depends["temporal-setup"]["condition"] == "service_completed_successfully"


# --- commands -------------------------------------------------------------------------------


def test_api_command_runs_the_app_factory(services):
    command = command_text(services["api"]).split()
    assert command[:3] == ["uvicorn", "api.app:create_app", "--factory"]
    assert "--host" in command and command[command.index("--host") + 1] == "0.0.0.0"
    assert "--port" in command and int(command[command.index("--port") + 1]) in container_ports(services["api"])
    module = command[1].split(":")[0]
    path = ROOT / (module.replace(".", "/") + ".py")
    assert path == ROOT / "api" / "app.py"
    assert path.is_file(), "api/app.py (the app factory module) is missing"


def test_worker_command_runs_worker_py(services):
    assert command_text(services["worker"]).split() == ["python", "worker.py"]
    assert (ROOT / "worker.py").is_file(), "worker.py is missing"


# --- settings -------------------------------------------------------------------------------


def test_app_services_share_one_environment(services):
    assert env_of(services["api"]) == env_of(services["worker"])


def test_every_flywheel_variable_is_a_setting(services):
    fields = set(settings.Settings.model_fields)
    for name in APP_SERVICES:
        env = env_of(services[name])
        flywheel = [key for key in env if key.startswith("FLYWHEEL_")]
        assert flywheel, f"{name} gets no FLYWHEEL_* settings"
        unknown = [key for key in flywheel if key.removeprefix("FLYWHEEL_").lower() not in fields]
        assert not unknown, f"{name}: {unknown} are not fields of settings.Settings"
        for key in (
            "FLYWHEEL_DATABASE_URL", "FLYWHEEL_TEMPORAL_ADDRESS", "FLYWHEEL_TEMPORAL_NAMESPACE",
            "FLYWHEEL_TASK_QUEUE", "FLYWHEEL_SMTP_HOST", "FLYWHEEL_SMTP_PORT", "FLYWHEEL_SMTP_TLS",
            "FLYWHEEL_CHROMA_URL", *OPERATOR_SUPPLIED,
        ):
            assert key in env, f"{name} lacks {key}"


def test_operator_supplied_values_are_required_variables(services):
    for name in APP_SERVICES:
        env = env_of(services[name])
        for key in OPERATOR_SUPPLIED:
            assert re.fullmatch(r"\$\{" + key + r":\?[^}]+\}", env[key]), (
                f"{name}: {key} must be '${{{key}:?...}}' so compose refuses to start without it"
            )


def test_values_are_valid_settings(services):
    env = env_of(services["api"])
    values = {
        key.removeprefix("FLYWHEEL_").lower(): ("placeholder" if value.startswith("${") else value)
        for key, value in env.items()
        if key.startswith("FLYWHEEL_")
    }
    parsed = settings.Settings(_env_file=None, **values)
    assert parsed.resolved_database_url().startswith("postgresql+psycopg://")
    assert parsed.temporal_namespace == "default"
    assert parsed.task_queue == "flywheel"
    assert parsed.smtp_port == 1025
    assert parsed.smtp_tls == "none"


def test_addresses_point_at_services_and_their_ports(services):
    env = env_of(services["api"])
    targets: dict[str, tuple[str, int]] = {}

    db = urlsplit(env["FLYWHEEL_DATABASE_URL"])
    assert db.scheme == "postgresql+psycopg"
    targets["FLYWHEEL_DATABASE_URL"] = (db.hostname, db.port)
    targets["FLYWHEEL_TEMPORAL_ADDRESS"] = host_port(env["FLYWHEEL_TEMPORAL_ADDRESS"])
    targets["FLYWHEEL_SMTP_HOST"] = (env["FLYWHEEL_SMTP_HOST"], int(env["FLYWHEEL_SMTP_PORT"]))
    chroma = urlsplit(env["FLYWHEEL_CHROMA_URL"])
    assert chroma.scheme == "http"
    targets["FLYWHEEL_CHROMA_URL"] = (chroma.hostname, chroma.port)

    assert targets == {
        "FLYWHEEL_DATABASE_URL": ("postgresql", 5432),
        "FLYWHEEL_TEMPORAL_ADDRESS": ("temporal", 7233),
        "FLYWHEEL_SMTP_HOST": ("mailpit", 1025),
        "FLYWHEEL_CHROMA_URL": ("chroma", 8000),
    }
    for key, (host, port) in targets.items():
        assert host in services, f"{key}: host {host!r} is not a compose service"
        assert port in container_ports(services[host]), f"{key}: {host} does not listen on {port}"


def test_database_credentials_match_postgresql(services):
    db = urlsplit(env_of(services["api"])["FLYWHEEL_DATABASE_URL"])
    postgres = env_of(services["postgresql"])
    assert db.username == postgres["POSTGRES_USER"]
    assert db.password == postgres["POSTGRES_PASSWORD"]
    assert db.path.lstrip("/") == postgres["POSTGRES_DB"]


# --- search attributes ----------------------------------------------------------------------


def registered_search_attributes(services) -> dict[str, str]:
    script = command_text(services["temporal-setup"])
    found: dict[str, str] = {}
    for line in script.splitlines():
        if "search-attribute create" not in line:
            continue
        match = re.search(r"--name\s+(\w+)\s+--type\s+(\w+)", line)
        assert match, f"cannot read the attribute of: {line.strip()}"
        assert match.group(1) not in found, f"{match.group(1)} registered twice"
        found[match.group(1)] = match.group(2)
    return found


def test_dev_server_registers_the_spec_search_attributes():
    assert SEARCH_ATTRIBUTES == SPEC_SEARCH_ATTRIBUTES


def test_production_registers_the_dev_server_search_attributes(services):
    assert registered_search_attributes(services) == SEARCH_ATTRIBUTES


def test_search_attributes_go_to_the_app_namespace(services):
    env = env_of(services["api"])
    script = command_text(services["temporal-setup"])
    creates = [line for line in script.splitlines() if "search-attribute create" in line]
    assert creates
    for line in creates:
        assert f"--address {env['FLYWHEEL_TEMPORAL_ADDRESS']}" in line
        assert f"--namespace {env['FLYWHEEL_TEMPORAL_NAMESPACE']}" in line
    # the final check of the script lists the same names
    loop = re.search(r"for name in ([\w ]+); do", script)
    assert loop and set(loop.group(1).split()) == set(SEARCH_ATTRIBUTES)


def test_setup_script_escapes_dollars_for_compose(services):
    # compose interpolates "$x"/"${x}" in the file itself; a shell variable must be written "$$x".
    script = command_text(services["temporal-setup"])
    assert "$" not in script.replace("$$", ""), "unescaped $ in temporal-setup's script"


# --- Dockerfile -----------------------------------------------------------------------------


def test_dockerfile_builds_the_worker_image():
    text = DOCKERFILE.read_text(encoding="utf-8")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    assert any(re.match(r"RUN pip install \.(\s|$)", line) for line in lines)
    cmd = [line for line in lines if line.startswith("CMD")]
    assert cmd and cmd[-1] == 'CMD ["python", "worker.py"]'


def test_dockerfile_copies_every_installed_package():
    text = DOCKERFILE.read_text(encoding="utf-8")
    copied: set[str] = set()
    for line in text.splitlines():
        if line.startswith("COPY "):
            copied.update(part.rstrip("/") for part in line.split()[1:-1])
    setuptools_cfg = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    needed = {"pyproject.toml", *setuptools_cfg["packages"], *(f"{m}.py" for m in setuptools_cfg["py-modules"])}
    assert needed <= copied, f"Dockerfile does not copy {sorted(needed - copied)}"
