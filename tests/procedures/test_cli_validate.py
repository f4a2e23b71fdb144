"""`flywheel validate` and `flywheel graph` (spec §9) on files that cannot be read or parsed:
one `FILE:LINE:COL: STEP_ID: message` line per problem, never a traceback."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GOOD = "procedure: demo-proc\nsteps:\n  - {id: a, type: message, text: hi}\n"


def flywheel(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_validate_reports_unreadable_files_on_one_line_each(tmp_path):
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(GOOD.replace("hi", "caf\xe9").encode("latin-1"))
    nul = tmp_path / "nul.yaml"
    nul.write_text(GOOD.replace("hi", "h\x00i"))
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    missing = tmp_path / "missing.yaml"
    res = flywheel("validate", str(latin1), str(nul), str(good), str(missing), str(tmp_path))
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 4, lines
    assert lines[0] == f"{latin1}:3:37: -: not UTF-8 text (byte 0xe9); save the file as UTF-8"
    assert lines[1].startswith(f"{nul}:3:35: -: invalid YAML: the character '\\x00' (#x0000) is not allowed")
    assert lines[2].startswith(f"{missing}:1:1: -: cannot read file: No such file")
    assert lines[3].startswith(f"{tmp_path}:1:1: -: cannot read file: Is a directory")


def test_validate_accepts_a_bom_and_passes_good_files(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    res = flywheel("validate", str(path))
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")


def test_graph_on_missing_undecodable_and_invalid_files(tmp_path):
    missing = flywheel("graph", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.strip() == f"{tmp_path / 'nope.yaml'}:1:1: -: cannot read file: No such file or directory"
    latin1 = tmp_path / "l.yaml"
    latin1.write_bytes(b"procedure: demo-proc\n\xff\n")
    res = flywheel("graph", str(latin1))
    assert res.returncode == 2 and res.stderr.strip() == f"{latin1}:2:1: -: not UTF-8 text (byte 0xff); save the file as UTF-8"
    bad = tmp_path / "b.yaml"
    bad.write_text(GOOD.replace("message", "mesage"))
    res = flywheel("graph", str(bad))
    assert res.returncode == 2 and "did you mean 'message'" in res.stderr and "Traceback" not in res.stderr
    good = tmp_path / "end.yaml"
    good.write_text(GOOD.replace("id: a", "id: end"))
    res = flywheel("graph", str(good))
    assert res.returncode == 0 and 's_end["end<br/>message"]' in res.stdout


def test_problem_lines_stay_one_line_for_odd_keys(tmp_path):
    path = tmp_path / "odd.json"
    path.write_text('{"procedure": "demo-proc", "steps": [{"id": "a", "type": "succeed", "x\\ny\\ud800": 1}]}')
    res = flywheel("validate", str(path))
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    (line,) = res.stdout.splitlines()
    assert line.startswith(f"{path}:1:") and "unknown field 'x\\ny" in line
