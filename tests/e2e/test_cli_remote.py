"""`flywheel knowledge add` (a folder of Markdown, one article each; PDF/DOCX/HTML through the
upload route) and `flywheel chat`, against the running API and a worker."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

from test_knowledge_api import make_docx, make_pdf

ROOT = Path(__file__).resolve().parents[2]


def flywheel(args, env, stdin=None):
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, input=stdin, text=True,
                          capture_output=True, timeout=300, env={**os.environ, **env, "PYTHONPATH": str(ROOT)})


def reported(stdout: str) -> dict[str, tuple[str, int, str]]:
    """{file name: (article id, version, new|changed|unchanged)} from the command's output."""
    out = {}
    for line in stdout.splitlines():
        match = re.match(r"^(.+): article (\S+) version (\d+) \((\w+)\)$", line)
        if match:
            out[Path(match.group(1)).name] = (match.group(2), int(match.group(3)), match.group(4))
    return out


def test_knowledge_add_then_chat(api, tenant, worker, tmp_path):
    docs = tmp_path / "help"
    docs.mkdir()
    (docs / "gift-cards.md").write_text("# Gift cards\n\n## Expiry\nGift cards never expire and can be "
                                        "used for any product in the store.\n")
    (docs / "opening-hours.md").write_text("# Opening hours\n\nThe support team answers chats from 8 am "
                                           "to 8 pm on weekdays.\n")
    key = tenant["headers"]["Authorization"].split()[1]
    env = {"FLYWHEEL_API_URL": api, "FLYWHEEL_API_KEY": key}

    added = flywheel(["knowledge", "add", str(docs)], env)
    assert added.returncode == 0, added.stdout + added.stderr
    assert added.stdout.count("version 1 (new)") == 2

    chat = flywheel(["chat", "--thread", "cli-1"], env, stdin="do gift cards run out at some point?\n")
    assert chat.returncode == 0, chat.stderr
    assert "bot> " in chat.stdout and "never expire" in chat.stdout
    assert "[1] Gift cards" in chat.stdout

    missing = flywheel(["knowledge", "add", str(tmp_path / "nope")], env)
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_knowledge_add_again_versions_the_same_articles_only_when_changed(api, tenant, worker, tmp_path):
    docs = tmp_path / "help"
    (docs / "billing").mkdir(parents=True)
    (docs / "shipping").mkdir()
    (docs / ".drafts").mkdir()
    (docs / "returns.md").write_text("---\nid: returns-policy\ntitle: Returns policy\n"
                                     "url: https://help.example.com/returns\n---\n"
                                     "Items can be returned within 60 days.\n")
    (docs / "billing" / "index.md").write_text("# Billing\n\nInvoices are sent on the first of the month.\n")
    (docs / "shipping" / "index.md").write_text("# Shipping\n\nParcels leave the warehouse within a day.\n")
    (docs / ".drafts" / "secret.md").write_text("# Draft\n\nNot ready.\n")
    (docs / "notes.pdf").write_bytes(b"%PDF not in a folder walk")
    manual = tmp_path / "warranty.pdf"
    manual.write_bytes(make_pdf(["The kettle warranty lasts five years.", "Keep your receipt."]))
    word = tmp_path / "care.docx"
    word.write_bytes(make_docx(["Kettle care", "Descale the kettle every month with citric acid."]))
    page = tmp_path / "hours.html"
    page.write_bytes(b"<html><head><title>Store hours</title></head><body><nav>Menu</nav><main>"
                     b"<p>The store opens at nine.</p></main></body></html>")
    key = tenant["headers"]["Authorization"].split()[1]
    env = {"FLYWHEEL_API_URL": api, "FLYWHEEL_API_KEY": key}
    headers = {"Authorization": f"Bearer {key}"}
    args = ["knowledge", "add", str(docs), str(manual), str(word), str(page)]

    first = flywheel(args, env)
    assert first.returncode == 0, first.stdout + first.stderr
    got = reported(first.stdout)
    assert set(got) == {"returns.md", "index.md", "warranty.pdf", "care.docx", "hours.html"}
    assert len(first.stdout.splitlines()) == 6  # both index.md, nothing from .drafts or notes.pdf
    assert all(state == "new" and version == 1 for _, version, state in got.values()), first.stdout
    assert got["returns.md"][0] == "returns-policy"

    def articles() -> dict[str, dict]:
        r = httpx.get(f"{api}/v1/knowledge/articles", headers=headers, timeout=30)
        assert r.status_code == 200, r.text
        return {a["id"]: a for a in r.json()}

    listed = articles()
    assert len(listed) == 6
    returns = httpx.get(f"{api}/v1/knowledge/articles/returns-policy", headers=headers, timeout=30).json()
    assert (returns["title"], returns["url"], returns["body"]) == (
        "Returns policy", "https://help.example.com/returns", "Items can be returned within 60 days.")
    pdf = httpx.get(f"{api}/v1/knowledge/articles/{got['warranty.pdf'][0]}", headers=headers, timeout=30).json()
    assert pdf["body"] == "The kettle warranty lasts five years.\nKeep your receipt." and "%PDF" not in pdf["body"]
    docx = httpx.get(f"{api}/v1/knowledge/articles/{got['care.docx'][0]}", headers=headers, timeout=30).json()
    assert "citric acid" in docx["body"] and "PK" not in docx["body"]
    html = httpx.get(f"{api}/v1/knowledge/articles/{got['hours.html'][0]}", headers=headers, timeout=30).json()
    assert (html["title"], html["body"]) == ("Store hours", "The store opens at nine.")

    again = flywheel(args, env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("version 1 (unchanged)") == 6, again.stdout
    assert {a: v["version"] for a, v in articles().items()} == {a: 1 for a in listed}  # no duplicates

    (docs / "shipping" / "index.md").write_text("# Shipping\n\nParcels now leave the warehouse the same day.\n")
    third = flywheel(args, env)
    assert third.returncode == 0, third.stdout + third.stderr
    assert third.stdout.count("(unchanged)") == 5 and third.stdout.count("version 2 (changed)") == 1, third.stdout
    changed = [line for line in third.stdout.splitlines() if line.endswith("(changed)")]
    assert changed and changed[0].startswith(f"{docs / 'shipping' / 'index.md'}: article ")
    assert sorted(a["version"] for a in articles().values()) == [1, 1, 1, 1, 1, 2]

    bad = tmp_path / "broken.pdf"
    bad.write_bytes(b"%PDF-1.7\nthis is not a pdf at all")
    odd = tmp_path / "tool.exe"
    odd.write_bytes(b"MZ")
    failed = flywheel(["knowledge", "add", str(bad), str(odd), str(docs / "returns.md")], env)
    assert failed.returncode == 1
    assert f"{bad}: failed: " in failed.stdout and "could not be read" in failed.stdout
    assert f"{odd}: failed: not a supported file type (.exe)" in failed.stdout
    assert "returns-policy version 1 (unchanged)" in failed.stdout
    assert len(articles()) == 6
