"""The `flywheel` command line (spec §9 plus operator commands)."""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Callable, Sequence

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Unreadable(Exception):
    """A procedure file that cannot be read as UTF-8 text; ``line``/``column`` locate the problem."""

    def __init__(self, message: str, line: int = 1, column: int = 1) -> None:
        super().__init__(message)
        self.message, self.line, self.column = message, line, column


def _read_text(name: str) -> str:
    """The file's text (UTF-8, a BOM allowed), or _Unreadable saying why and where."""
    try:
        raw = Path(name).read_bytes()
    except OSError as err:
        raise _Unreadable(f"cannot read file: {err.strerror or err}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = len(raw[raw.rfind(b"\n", 0, err.start) + 1:err.start].decode("utf-8", "replace")) + 1
        raise _Unreadable(f"not UTF-8 text (byte 0x{raw[err.start]:02x}); save the file as UTF-8",
                          line, column) from None


def _catalog() -> dict:
    from connectors.catalog import builtin_connectors
    return builtin_connectors()


def cmd_validate(args: argparse.Namespace) -> int:
    from procedures.errors import ProcedureError
    from procedures.loader import load_procedure
    bad = False
    for name in args.files:
        try:
            load_procedure(_read_text(name), name, _catalog())
        except _Unreadable as err:
            print(f"{name}:{err.line}:{err.column}: -: {err.message}")
            bad = True
        except ProcedureError as err:
            for problem in err.problems:
                print(problem.format())
            bad = True
    return EXIT_FAILED if bad else EXIT_OK


def cmd_graph(args: argparse.Namespace) -> int:
    from procedures.errors import ProcedureError
    from procedures.graph import to_mermaid
    from procedures.loader import load_procedure
    try:
        definition = load_procedure(_read_text(args.file), args.file, _catalog())
    except _Unreadable as err:
        print(f"{args.file}:{err.line}:{err.column}: -: {err.message}", file=sys.stderr)
        return EXIT_USAGE
    except ProcedureError as err:
        for problem in err.problems:
            print(problem.format(), file=sys.stderr)
        return EXIT_USAGE
    print(to_mermaid(definition))
    return EXIT_OK


def _pairs(values: Sequence[str], flag: str) -> list[tuple[str, str]]:
    out = []
    for value in values or []:
        if "=" not in value:
            raise ValueError(f"{flag} takes STEP=VALUE, got {value!r}")
        step, _, text = value.partition("=")
        out.append((step.strip(), text))
    return out


def cmd_run(args: argparse.Namespace) -> int:
    from activities.dryrun import load_mocks
    from cli.dryrun import dry_run, json_report
    from procedures.errors import ProcedureError
    try:
        inputs = json.loads(args.input) if args.input else {}
        if not isinstance(inputs, dict):
            raise ValueError("--input must be a JSON object")
        mocks = load_mocks(Path(args.mock).read_text()) if args.mock else {}
        decisions = dict(_pairs(args.decide, "--decide"))
        for step, decision in decisions.items():
            if decision not in ("approved", "rejected"):
                raise ValueError(f"--decide {step}= takes approved or rejected, not {decision!r}")
        answers: dict[str, list[str]] = {}
        for step, text in _pairs(args.answer, "--answer"):
            answers.setdefault(step, []).append(text)
    except (ValueError, OSError) as err:
        print(f"flywheel run: {err}", file=sys.stderr)
        return EXIT_USAGE
    echo = (lambda line: None) if args.json else print
    try:
        outcome = asyncio.run(dry_run(Path(args.file), inputs, mocks, decisions, answers, echo))
    except ProcedureError as err:
        for problem in err.problems:
            print(problem.format(), file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, OSError) as err:
        print(f"flywheel run: {err}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(json_report(outcome), indent=2, default=str))
    else:
        error = outcome.get("error")
        print(f"status: {outcome['status']}" + (f" ({error['name']} at {error['step']}: {error['message']})" if error else ""))
    return EXIT_OK if outcome["status"] in ("succeeded", "handed_off") else EXIT_FAILED


def _admin(command: str, work: Callable[..., int]) -> int:
    """Run an operator command on the configured database: its errors become one line on stderr.

    A bad argument (a tenant name without letters, a bad secret name) exits 2; a refused
    operation (the tenant exists, an unknown tenant, an unusable encryption key, no database)
    exits 1. Nothing is half-done: each command is one transaction.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from db.errors import Invalid, StoreError
    from runtime.keys import ensure_keys
    from security import SecurityError
    from settings import get_settings
    try:
        return work(ensure_keys(get_settings()))
    except Invalid as err:
        print(f"flywheel {command}: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (StoreError, SecurityError) as err:
        print(f"flywheel {command}: {err}", file=sys.stderr)
        return EXIT_FAILED
    except SQLAlchemyError as err:
        reason = " ".join(str(getattr(err, "orig", None) or err).split())[:300]
        print(f"flywheel {command}: database error: {reason}", file=sys.stderr)
        return EXIT_FAILED
    except (OSError, ValueError) as err:  # the data dir's keys.json unreadable or corrupt, a bad setting
        print(f"flywheel {command}: {' '.join(str(err).split())[:300]}", file=sys.stderr)
        return EXIT_FAILED


def cmd_tenants_create(args: argparse.Namespace) -> int:
    from cli.tenants import create_tenant_command

    def work(settings) -> int:
        key = create_tenant_command(args.name, settings)
        print(f"created tenant {args.name}")
        print(key)
        return EXIT_OK
    return _admin("tenants create", work)


def cmd_secrets_set(args: argparse.Namespace) -> int:
    from cli.secrets_cmd import set_secret_command

    def work(settings) -> int:
        value = args.value if args.value is not None else sys.stdin.read().rstrip("\n")
        set_secret_command(args.tenant, args.name, value, settings)
        print(f"secret {args.name} set for {args.tenant}")
        return EXIT_OK
    return _admin("secrets set", work)


def cmd_secrets_rotate(args: argparse.Namespace) -> int:
    from cli.secrets_cmd import rotate_command

    def work(settings) -> int:
        count = rotate_command(settings)
        print(f"re-encrypted {count} secrets with the newest key")
        return EXIT_OK
    return _admin("secrets rotate", work)


def cmd_dev(args: argparse.Namespace) -> int:
    from cli.dev import run_dev
    return run_dev(port=args.port, ui_port=args.ui_port, shop_port=args.shop_port)


def cmd_chat(args: argparse.Namespace) -> int:
    from cli.remote import chat
    try:
        return chat(args.api, args.key, args.thread, args.email)
    except ValueError as err:
        print(f"flywheel chat: {err}", file=sys.stderr)
        return EXIT_USAGE


def cmd_knowledge_add(args: argparse.Namespace) -> int:
    from cli.remote import knowledge_add
    try:
        return knowledge_add(args.paths, args.api, args.key)
    except ValueError as err:
        print(f"flywheel knowledge add: {err}", file=sys.stderr)
        return EXIT_USAGE


def cmd_worker(args: argparse.Namespace) -> int:
    import worker
    worker.main()
    return EXIT_OK


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flywheel", description="Flywheel procedures and operations")
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser("validate", help="validate procedure files")
    v.add_argument("files", nargs="+")
    v.set_defaults(fn=cmd_validate)

    g = sub.add_parser("graph", help="print a Mermaid flowchart of a procedure")
    g.add_argument("file")
    g.set_defaults(fn=cmd_graph)

    r = sub.add_parser("run", help="dry-run a procedure with mocked connectors, in skipped time")
    r.add_argument("file")
    r.add_argument("--input", default="{}", help="run input as JSON")
    r.add_argument("--mock", help="YAML/JSON map: step id or connector.operation -> response")
    r.add_argument("--decide", action="append", default=[], help="STEP=approved|rejected")
    r.add_argument("--answer", action="append", default=[], help="STEP=TEXT (repeatable)")
    r.add_argument("--json", action="store_true", help="print one JSON object")
    r.set_defaults(fn=cmd_run)

    t = sub.add_parser("tenants", help="manage tenants").add_subparsers(dest="action", required=True)
    tc = t.add_parser("create", help="create a tenant; prints its API key last")
    tc.add_argument("name")
    tc.set_defaults(fn=cmd_tenants_create)

    s = sub.add_parser("secrets", help="tenant secrets").add_subparsers(dest="action", required=True)
    ss = s.add_parser("set", help="set a secret (value from the argument or stdin)")
    ss.add_argument("tenant")
    ss.add_argument("name")
    ss.add_argument("value", nargs="?")
    ss.set_defaults(fn=cmd_secrets_set)
    sr = s.add_parser("rotate", help="re-encrypt every secret with the newest key")
    sr.set_defaults(fn=cmd_secrets_rotate)

    d = sub.add_parser("dev", help="run everything locally on embedded defaults")
    d.add_argument("--port", type=int, default=8000, help="API port")
    d.add_argument("--ui-port", type=int, default=8233, help="Temporal UI port")
    d.add_argument("--shop-port", type=int, default=8081, help="demo shop port")
    d.set_defaults(fn=cmd_dev)

    c = sub.add_parser("chat", help="chat with the running product in the terminal")
    c.add_argument("--api", help="API URL (default FLYWHEEL_API_URL or http://127.0.0.1:8000)")
    c.add_argument("--key", help="API key (default FLYWHEEL_API_KEY or the demo tenant's)")
    c.add_argument("--thread", help="conversation thread id (default: a new one)")
    c.add_argument("--email", help="the customer's e-mail")
    c.set_defaults(fn=cmd_chat)

    k = sub.add_parser("knowledge", help="knowledge base").add_subparsers(dest="action", required=True)
    ka = k.add_parser("add", help="add Markdown/text files or folders, one article each")
    ka.add_argument("paths", nargs="+")
    ka.add_argument("--api")
    ka.add_argument("--key")
    ka.set_defaults(fn=cmd_knowledge_add)

    w = sub.add_parser("worker", help="run a worker")
    w.set_defaults(fn=cmd_worker)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a document's odd characters must not crash the output
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = parser().parse_args(argv)
    code = args.fn(args)
    return code


if __name__ == "__main__":
    sys.exit(main())


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
