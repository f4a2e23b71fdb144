"""The operator commands: tenants create (key on the last line), secrets set/rotate, worker SIGTERM."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet
from sqlmodel import select

from db.engine import make_engine, session_scope
from db.models import Secret
from db.tenants import tenant_for_key

ROOT = Path(__file__).resolve().parents[2]


def flywheel(args: list[str], env: dict, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=cwd, env={**env, "PYTHONPATH": str(ROOT)},
                          input=stdin, capture_output=True, text=True, timeout=60)


def test_tenants_create_and_secrets_set_and_rotate(database_url, tmp_path):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    env = {**os.environ, "FLYWHEEL_DATABASE_URL": database_url, "FLYWHEEL_SECRET_KEYS": old,
           "FLYWHEEL_LINK_SECRET": "x", "FLYWHEEL_DATA_DIR": str(tmp_path)}
    created = flywheel(["tenants", "create", "Acme Support"], env, tmp_path)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    engine = make_engine(database_url)
    with session_scope(engine) as session:
        assert tenant_for_key(session, key).id == "acme-support"

    assert flywheel(["secrets", "set", "acme-support", "shop_token"], env, tmp_path, stdin="shpat_x\n").returncode == 0
    with session_scope(engine) as session:
        before = session.exec(select(Secret)).one().ciphertext
    assert "shpat_x" not in before

    rotated = flywheel(["secrets", "rotate"], {**env, "FLYWHEEL_SECRET_KEYS": f"{new},{old}"}, tmp_path)
    assert rotated.returncode == 0 and "1" in rotated.stdout
    with session_scope(engine) as session:
        after = session.exec(select(Secret)).one().ciphertext
    assert after != before
    assert Fernet(new.encode()).decrypt(after.encode()) == b"shpat_x"  # now under the newest key
    engine.dispose()

    missing = flywheel(["secrets", "set", "nobody", "x", "y"], env, tmp_path)
    assert missing.returncode != 0 and "not found" in (missing.stderr + missing.stdout)


def test_worker_stops_gracefully_on_sigterm(worker_process):
    proc = worker_process()
    proc.wait_ready()
    assert proc.stop() == 0  # exited by itself, not killed by the signal


def _one_error_line(res: subprocess.CompletedProcess, code: int, command: str, fragment: str) -> None:
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and res.stdout == ""
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith(f"flywheel {command}: ") and fragment in line, line


def test_operator_command_errors_are_one_line_and_change_nothing(database_url, tmp_path):
    from db.models import Tenant

    key = Fernet.generate_key().decode()
    env = {**os.environ, "FLYWHEEL_DATABASE_URL": database_url, "FLYWHEEL_SECRET_KEYS": key,
           "FLYWHEEL_LINK_SECRET": "x", "FLYWHEEL_DATA_DIR": str(tmp_path)}
    assert flywheel(["tenants", "create", "Acme"], env, tmp_path).returncode == 0
    _one_error_line(flywheel(["tenants", "create", "acme"], env, tmp_path), 1, "tenants create",
                    "tenant 'acme' already exists")
    _one_error_line(flywheel(["tenants", "create", "!!!"], env, tmp_path), 2, "tenants create",
                    "has no letters or digits")
    _one_error_line(flywheel(["secrets", "set", "nobody", "tok", "v"], env, tmp_path), 1, "secrets set",
                    "tenant 'nobody' not found")
    _one_error_line(flywheel(["secrets", "set", "acme", "bad name", "v"], env, tmp_path), 2, "secrets set",
                    "must be letters, digits and '_'")
    bad_key = {**env, "FLYWHEEL_SECRET_KEYS": "not-a-fernet-key"}
    _one_error_line(flywheel(["secrets", "set", "acme", "tok", "v"], bad_key, tmp_path), 1, "secrets set",
                    "not a valid Fernet key")
    _one_error_line(flywheel(["secrets", "rotate"], bad_key, tmp_path), 1, "secrets rotate", "not a valid Fernet key")

    assert flywheel(["secrets", "set", "acme", "tok", "v1"], env, tmp_path).returncode == 0
    engine = make_engine(database_url)
    with session_scope(engine) as session:
        before = session.exec(select(Secret)).one().ciphertext
    unrelated = {**env, "FLYWHEEL_SECRET_KEYS": Fernet.generate_key().decode()}  # cannot decrypt the stored one
    _one_error_line(flywheel(["secrets", "rotate"], unrelated, tmp_path), 1, "secrets rotate", "cannot rotate secret")
    with session_scope(engine) as session:
        assert session.exec(select(Secret)).one().ciphertext == before
        assert [t.id for t in session.exec(select(Tenant))] == ["acme"]
    engine.dispose()
