"""A sandbox child does not outlive its parent (knowledge.child_guard): a worker killed while a
hostile page is being parsed leaves no parser running."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The parent starts parsing a page html.parser needs minutes for (a sandbox timeout far away),
# reports its child and is then killed mid-parse: the busy child never reads the closed pipe.
PARENT = """
import sys, threading
sys.path.insert(0, sys.argv[1])
from knowledge.extract_html_sandbox import HtmlSandbox
box = HtmlSandbox(timeout=600)
proc = box._start()
threading.Thread(target=box.parse, args=("<p>" + "a <b" * 16_000,), daemon=True).start()
print(proc.pid, flush=True)
threading.Event().wait()
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has ended; only its exit status is left


def test_the_child_is_killed_with_its_parent():
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(ROOT)], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        time.sleep(2)  # the child is parsing
        assert alive(child)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while alive(child):
            assert time.monotonic() < deadline, "the sandbox child outlived its parent"
            time.sleep(0.05)
    finally:
        if parent.poll() is None:
            parent.kill()


def test_a_child_whose_parent_is_already_gone_exits():
    env = {**os.environ, "FLYWHEEL_SANDBOX_PARENT": "1" if os.getpid() != 1 else "2"}
    code = "import sys; sys.path.insert(0, sys.argv[1]); from knowledge.child_guard import die_with_parent; " \
           "die_with_parent(); print('still here')"
    done = subprocess.run([sys.executable, "-c", code, str(ROOT)], env=env, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 1 and "still here" not in done.stdout
