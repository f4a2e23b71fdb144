"""Conversation turn latency on the offline default, beside the floor measured in the same run.

    .venv/bin/python bench/conversations.py [--turns N] [--concurrency 1,20] [--rounds R] [--skip-quality]

Starts a local dev server (WAL pragmas), a worker with the real activities (local embedding
model, Chroma on disk, SQLite) and indexes the project's help-center set (articles with their
example questions) for one tenant. For each
concurrency level C it measures, interleaved:

* turns: C concurrent conversations of the `api` channel, each sending questions one after
  another through the same update-with-start call `POST /v1/conversations/{thread}/messages`
  makes (message in -> reply out: the reply is the update's result, as for the API; a webhook
  channel's turn also delivers it through the channel's adapter, bench/channels.py);
* the floor: a bare Temporal update round trip (a workflow whose update returns at once) plus the
  retrieval call alone (`KnowledgeIndex.search`), each with C concurrent callers.

It also reports quality on every split of the set (tests/knowledge/helpcenter/README.md: the
tuning split, on which weights and the passage floor were chosen, the held-out split, never
used for any choice, and, without targets, heldout-1, heldout-2 and heldout-3, earlier held-out
splits, looked at since (the threshold was chosen on them and tuning), and the stress splits,
an earlier round's contrived paraphrases):
recall@1 and recall@3 of retrieval alone, and, through whole turns, how many in-scope questions
get an answer citing the right article first and how many out-of-scope questions are declined
(handed off), each beside its target. Targets: p50 at most 1.5x the floor, recall@1 >= 0.85,
recall@3 >= 0.95, every out-of-scope question declined (tuning and held-out). Last line:
`latency_ratio=X p50_ms=Y p95_ms=Z concurrency=N` (the highest concurrency).
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from temporalio.client import Client  # noqa: E402
from temporalio.common import WorkflowIDConflictPolicy  # noqa: E402

from bench.echo_workflow import EchoWorkflow  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def timed(coro) -> float:
    start = time.perf_counter()
    await coro
    return (time.perf_counter() - start) * 1000


async def run_concurrent(make, concurrency: int, per_worker: int) -> list[float]:
    """`concurrency` callers, each making `per_worker` sequential calls; latencies in ms."""
    async def caller(i: int) -> list[float]:
        return [await timed(make(i, j)) for j in range(per_worker)]
    results = await asyncio.gather(*(caller(i) for i in range(concurrency)))
    return [x for r in results for x in r]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=30, help="turns per conversation and level")
    parser.add_argument("--concurrency", default="1,20")
    parser.add_argument("--rounds", type=int, default=6,
                        help="interleaved rounds of turns, bare updates and searches per level")
    parser.add_argument("--skip-quality", action="store_true",
                        help="latency only (no quality figures): for quick comparisons while tuning")
    args = parser.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]

    from activities.conversation import ConversationActivities
    from activities.services import Services
    from api.routes.conversations import send_message
    from db.engine import session_scope
    from db.tenants import create_tenant
    from knowledge.helpcenter import SPLITS, TARGET_SPLITS, index_helpcenter, load_handoff, load_helpcenter
    from runtime.devserver import DevServer
    from runtime.workers import activities_for, build_worker
    from settings import Settings
    from worker import warm_up

    tmp = Path(tempfile.mkdtemp(prefix="flywheel-bench-conv-"))
    settings = Settings(data_dir=tmp, task_queue="bench-conv", secret_keys="", link_secret="bench")
    from cryptography.fernet import Fernet
    settings = settings.model_copy(update={"secret_keys": Fernet.generate_key().decode()})
    articles, questions, _ = load_helpcenter()
    splits = {} if args.skip_quality else {split: load_helpcenter(split=split)[1:] for split in SPLITS}

    with DevServer(db_file=tmp / "dev.db") as server:
        settings = settings.model_copy(update={"temporal_address": server.address})
        services = Services.from_settings(settings)
        with session_scope(services.engine) as session:
            tenant, _ = create_tenant(session, f"bench-{uuid.uuid4().hex[:6]}")
        client = await Client.connect(server.address)
        acts = activities_for(services)
        conv = next(a.__self__ for a in acts if isinstance(getattr(a, "__self__", None), ConversationActivities))
        warm_up(services)
        index_helpcenter(conv.index, tenant.id)  # the articles and the hand-off articles

        # Quality: retrieval alone, then whole turns (declining happens in the turn).
        quality = {}
        for split, (split_questions, _) in splits.items():
            ranked = [[h.article_id for h in conv.index.search(tenant.id, q["question"], 3)]
                      for q in split_questions]
            n = len(split_questions)
            quality[split] = {
                "recall1": sum(r[:1] == [q["article_id"]] for r, q in zip(ranked, split_questions)) / n,
                "recall3": sum(q["article_id"] in r for r, q in zip(ranked, split_questions)) / n}

        worker = build_worker(client, settings.task_queue, acts, workflows_extra=[EchoWorkflow])
        async with worker:
            for split, (split_questions, split_out) in splits.items():
                declined = 0
                for i, q in enumerate(split_out):
                    out = await send_message(client, settings, tenant.id, "api", f"oos-{split}-{i}", q, {})
                    declined += out["status"] == "handed_off"
                right = wrong = 0
                for i, q in enumerate(split_questions):
                    out = await send_message(client, settings, tenant.id, "api", f"q-{split}-{i}",
                                             q["question"], {})
                    cited = [c["article_id"] for c in out["reply"]["citations"]]
                    right += bool(cited) and cited[0] == q["article_id"]
                    wrong += bool(cited) and cited[0] != q["article_id"]
                quality[split].update(declined=declined, out_of_scope=len(split_out), right=right,
                                      wrong=wrong, questions=len(split_questions))

            lines = []
            for level in levels:
                echo_ids = [f"echo-{level}-{i}" for i in range(level)]
                for wid in echo_ids:
                    await client.start_workflow(EchoWorkflow.run, id=wid, task_queue=settings.task_queue,
                                                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING)
                texts = [q["question"] for q in questions]
                run_tag = uuid.uuid4().hex[:6]

                threads = {i: 0 for i in range(level)}
                counter = iter(range(10**9))

                def unique(text: str) -> str:
                    # a fresh text per call: no call reuses another call's query embedding
                    return f"{text} (ref {next(counter)})"

                async def turn(i, j):
                    out = await send_message(client, settings, tenant.id, "api",
                                             f"c{level}-{run_tag}-{i}-{threads[i]}",
                                             unique(texts[(i * 7 + j) % len(texts)]), {})
                    if out["status"] != "open":  # handed off: the next turn starts a new conversation
                        threads[i] += 1

                def bare_update(i, j):
                    return client.get_workflow_handle(echo_ids[i]).execute_update(EchoWorkflow.ping, "x")

                def retrieval(i, j):
                    return asyncio.to_thread(conv.index.search, tenant.id, unique(texts[(i * 7 + j) % len(texts)]), 5)

                turns, updates, searches = [], [], []
                per_round = max(1, args.turns // args.rounds)
                for _ in range(max(1, args.turns // per_round)):  # interleaved: drift hits all three alike
                    turns += await run_concurrent(turn, level, per_round)
                    updates += await run_concurrent(bare_update, level, per_round)
                    searches += await run_concurrent(retrieval, level, per_round)
                floor = statistics.median(updates) + statistics.median(searches)
                p50, p95 = statistics.median(turns), pct(turns, 95)
                print(f"concurrency {level:>3}: turn p50 {p50:7.1f} ms  p95 {p95:7.1f} ms | floor {floor:6.1f} ms "
                      f"(update p50 {statistics.median(updates):6.1f} + retrieval p50 "
                      f"{statistics.median(searches):6.1f}) | ratio {p50 / floor:4.2f}  ({len(turns)} turns)")
                lines.append(f"latency_ratio={p50 / floor:.2f} p50_ms={p50:.1f} p95_ms={p95:.1f} concurrency={level}")
                for wid in echo_ids:
                    await client.get_workflow_handle(wid).signal(EchoWorkflow.stop)
        print(f"help-center set: {len(articles)} articles + {len(load_handoff())} hand-off articles, "
              f"answer_threshold {settings.answer_threshold}, answer_passage_floor "
              f"{settings.answer_passage_floor}, answer_handoff_match {settings.answer_handoff_match}")
        for split, q in quality.items():
            targeted = split in TARGET_SPLITS

            def verdict(target: str, ok: bool) -> str:
                return f"target {target} {'met' if ok else 'NOT met'}" if targeted else "no target"

            print(f"{split:>14}: recall@1={q['recall1']:.3f} ({verdict('0.85', q['recall1'] >= 0.85)}) "
                  f"recall@3={q['recall3']:.3f} ({verdict('0.95', q['recall3'] >= 0.95)}) "
                  f"out-of-scope declined={q['declined']}/{q['out_of_scope']} "
                  f"({verdict('all', q['declined'] == q['out_of_scope'])}); in-scope turns answered citing "
                  f"the right article first {q['right']}/{q['questions']}, another article {q['wrong']}/{q['questions']}")
        for line in lines:
            print(line)


if __name__ == "__main__":
    asyncio.run(main())
