"""The client against the real service (uvicorn on a free port): every call, typed results,
errors with the service's message, and retries that never double a write."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import socket
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from client import (
    AsyncClient,
    BadRequest,
    Campaign,
    Client,
    Conflict,
    Forbidden,
    GoldAdded,
    Leaderboard,
    NewClip,
    NotFound,
    RetryPolicy,
    Unauthorized,
    Unreachable,
)
from tests.api.conftest import LiveServer
from tests.client.conftest import ADMIN_KEY, Flaky

FAST = RetryPolicy(retries=3, backoff=0.0)


def _clips(n: int, start: int = 0) -> Iterator[NewClip]:
    """A lazy stream of clips in two prompts; every fourth lacks its 'b' score."""
    for i in range(start, start + n):
        scores = {"a": float(i % 5), "b": None if i % 4 == 3 else float(i % 3)}
        yield NewClip(f"e{i}", f"https://example.org/{i}.mp4", f"g{i % 2}", "animals", scores)


def test_a_whole_party_through_the_blocking_client(live: LiveServer) -> None:
    posted: list[str] = []

    def count(request: httpx.Request) -> None:
        if request.url.path.endswith("/clips"):
            posted.append(request.url.path)

    http = httpx.Client(base_url=live.url, event_hooks={"request": [count]}, timeout=30)
    with http, Client(http=http, key=ADMIN_KEY) as service:
        assert service.health().status == "ok"
        campaign = service.create_campaign("party", criteria=["a", "b"], lease_seconds=60)
        assert isinstance(campaign, Campaign) and campaign.criteria == ["a", "b"]
        added = service.stream_clips(campaign.id, _clips(25), batch_size=10)
        assert len(posted) == 3  # 10 + 10 + 5, read lazily from the generator
        assert added.added == 25 and [c.external_id for c in added.clips] == [
            f"e{i}" for i in range(25)
        ]
        more = service.add_clips(campaign.id, [{"external_id": "x", "uri": "https://x/x.mp4"}])
        assert more.added == 1 and len(posted) == 4

        ann = service.for_rater(service.register_rater(campaign.id, "ann").token)
        task = ann.next_assignment(campaign.id).assignment
        assert task is not None and task.kind == "pair" and task.right is not None
        assert task.left.group == task.right.group  # the campaign pairs within a prompt
        first = ann.judge(task.id, "left")
        again = ann.judge(task.id, "left")
        assert (first.duplicate, again.duplicate) == (False, True)
        assert again.judgment_id == first.judgment_id

        board = service.leaderboard(campaign.id)
        assert isinstance(board, Leaderboard) and board.n_judgments == 1
        assert len(board.clips) == 26 and [c.rank for c in board.clips] == list(range(1, 27))
        assert ann.leaderboard(campaign.id, level=0.5).level == 0.5  # a rater may read it too
        last = board.clips[-1]
        one = service.leaderboard(campaign.id, external_id=last.external_id)
        assert one.clips == [last] and one.total == 1 and one.external_id == last.external_id
        weights = service.weights(campaign.id)
        assert [w.criterion for w in weights.global_] == ["a", "b"]
        assert [c.context for c in weights.contexts] == ["animals", "default"]  # "x" has none
        assert [(r.name, r.labels) for r in service.raters(campaign.id)] == [("ann", 1)]
        assert service.progress(campaign.id)[-1].labels == 1
        assert [c.id for c in service.campaigns()] == [campaign.id]
        assert service.campaign(campaign.id).n_judgments == 1

        rows = list(csv.DictReader(io.StringIO(service.export(campaign.id))))
        assert len(rows) == 1
        preference = json.loads(service.export(campaign.id, "preferences", "jsonl"))
        assert {preference["chosen"], preference["rejected"]} == {
            task.left.external_id,
            task.right.external_id,
        }


def test_errors_carry_the_services_status_and_message(live: LiveServer) -> None:
    with Client(live.url, key=ADMIN_KEY) as service:
        with pytest.raises(NotFound) as missing:
            service.campaign(999)
        assert missing.value.status == 404 and "999" in missing.value.message
        campaign = service.create_campaign("party", criteria=["a", "b"])
        with pytest.raises(BadRequest) as bad:
            service.add_clips(campaign.id, [NewClip("a", "https://x/a.mp4", scores={"zz": 1.0})])
        assert bad.value.status == 400 and "zz" in bad.value.message
        service.add_clips(campaign.id, _clips(4))
        with pytest.raises(Conflict, match="e1"):
            service.add_clips(campaign.id, _clips(1, start=1))
        token = service.register_rater(campaign.id).token
        other = service.create_campaign("other", criteria=["a"], min_labels=3)
        assert other.min_labels == 3 and campaign.min_labels == 2
        with pytest.raises(Forbidden):
            service.for_rater(token).next_assignment(other.id)
        rater = service.for_rater(token)
        task = rater.next_assignment(campaign.id).assignment
        assert task is not None
        rater.judge(task.id, "right")
        with pytest.raises(Conflict) as changed:
            rater.judge(task.id, "left")  # a different answer to an answered assignment
        assert changed.value.status == 409 and changed.value.message
        with pytest.raises(ValueError, match="not both"):
            rater.judge(task.id, "left", level=1)
    with Client(live.url, key="wrong") as stranger, pytest.raises(Unauthorized) as denied:
        stranger.campaigns()
    assert "admin key" in denied.value.message


def test_a_judgment_whose_answer_was_lost_is_sent_again_and_counted_once(
    live: LiveServer,
) -> None:
    with Client(live.url, key=ADMIN_KEY) as service:
        campaign = service.create_campaign("party", criteria=["a", "b"])
        service.add_clips(campaign.id, _clips(6))
        token = service.register_rater(campaign.id).token
    flaky = Flaky("/judgment", "lost")
    with Client(live.url, token=token, transport=flaky, retry=FAST) as rater:
        task = rater.next_assignment(campaign.id).assignment
        assert task is not None
        out = rater.judge(task.id, "tie")
        # the first post reached the service and was stored; the second found it there
        assert flaky.sent[f"/v1/assignments/{task.id}/judgment"] == 2 and out.duplicate
    with Client(live.url, key=ADMIN_KEY) as service:
        assert service.campaign(campaign.id).n_judgments == 1
        assert len(list(csv.DictReader(io.StringIO(service.export(campaign.id))))) == 1


def test_reads_and_assignments_wait_out_a_503(live: LiveServer) -> None:
    with Client(live.url, key=ADMIN_KEY) as service:
        campaign = service.create_campaign("party", criteria=["a", "b"])
        service.add_clips(campaign.id, _clips(6))
        token = service.register_rater(campaign.id).token
    flaky = Flaky("/leaderboard", "unavailable", times=2, method="GET")
    with Client(live.url, key=ADMIN_KEY, transport=flaky, retry=FAST) as service:
        assert len(service.leaderboard(campaign.id).clips) == 6 and flaky.left == 0
    flaky = Flaky("/assignments", "unavailable")
    with Client(live.url, token=token, transport=flaky, retry=FAST) as rater:
        assert rater.next_assignment(campaign.id).assignment is not None and flaky.left == 0
    flaky = Flaky("/leaderboard", "unavailable", times=5, method="GET")
    with Client(live.url, key=ADMIN_KEY, transport=flaky, retry=FAST) as service:
        with pytest.raises(Exception) as gave_up:
            service.leaderboard(campaign.id)
        assert getattr(gave_up.value, "status", None) == 503
        assert "restarting" in gave_up.value.message  # type: ignore[attr-defined]


def test_a_write_that_is_not_idempotent_is_repeated_only_when_it_was_never_sent(
    live: LiveServer,
) -> None:
    refused = Flaky("/v1/campaigns", "refused")
    with Client(live.url, key=ADMIN_KEY, transport=refused, retry=FAST) as service:
        service.create_campaign("first")
        assert refused.sent["/v1/campaigns"] == 1  # one campaign: the refused try never left
    lost = Flaky("/v1/campaigns", "lost")
    with Client(live.url, key=ADMIN_KEY, transport=lost, retry=FAST) as service:
        with pytest.raises(Unreachable):
            service.create_campaign("second")  # it may exist: sending it again could make two
        assert lost.sent["/v1/campaigns"] == 1
        assert sorted(c.name for c in service.campaigns()) == ["first", "second"]


def test_nothing_listening_is_unreachable_after_the_retries() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])  # closed again: nothing listens there
    dead = Client(f"http://127.0.0.1:{port}", retry=RetryPolicy(retries=2, backoff=0.0))
    with dead, pytest.raises(Unreachable, match="3 tries"):
        dead.health()


def test_the_async_client_runs_the_same_party(live: LiveServer) -> None:
    async def clips() -> AsyncIterator[NewClip]:
        for clip in _clips(7):
            yield clip

    async def party() -> tuple[int, int, bool]:
        async with AsyncClient(live.url, key=ADMIN_KEY, retry=FAST) as service:
            campaign = await service.create_campaign("async", criteria=["a", "b"], ties=False)
            added = await service.stream_clips(campaign.id, clips(), batch_size=3)
            raters = [
                service.for_rater((await service.register_rater(campaign.id, f"r{k}")).token)
                for k in range(3)
            ]
            offers = await asyncio.gather(*(r.next_assignment(campaign.id) for r in raters))
            tasks = [offer.assignment for offer in offers]
            assert all(t is not None and "tie" not in t.choices for t in tasks)
            pairs = {frozenset((t.left.id, t.right.id)) for t in tasks}  # type: ignore[union-attr]
            answers = await asyncio.gather(
                *(r.judge(t.id, "left") for r, t in zip(raters, tasks, strict=True))  # type: ignore[union-attr]
            )
            board = await service.leaderboard(campaign.id)
            with pytest.raises(NotFound):
                await service.weights(12345)
            return (
                added.added,
                board.n_judgments,
                len(pairs) == 3 and not any(a.duplicate for a in answers),
            )

    assert asyncio.run(party()) == (7, 3, True)


def test_the_operator_controls_through_the_client(live: LiveServer) -> None:
    with Client(live.url, key=ADMIN_KEY, retry=FAST) as service:
        campaign = service.create_campaign("ops", criteria=["a", "b"], emoji_levels=5)
        clips = service.add_clips(campaign.id, list(_clips(4))).clips
        created = service.register_rater(campaign.id, "ann")
        ann = service.for_rater(created.token)

        changed = service.update_campaign(campaign.id, lease_seconds=30, emoji_levels=None)
        assert (changed.lease_seconds, changed.emoji_levels, changed.state) == (
            30.0,
            None,
            "active",
        )
        with pytest.raises(Conflict, match="ties"):
            service.update_campaign(campaign.id, ties=False)
        assert service.change_state(campaign.id, "pause").state == "paused"
        offer = ann.next_assignment(campaign.id)
        assert offer.assignment is None and offer.state == "paused"
        assert service.change_state(campaign.id, "resume").state == "active"

        retired = service.retire_clip(campaign.id, clips[0].id)
        assert retired.retired is True
        board = service.leaderboard(campaign.id)
        assert {c.external_id: c.state for c in board.clips}["e0"] == "retired"
        assert service.restore_clip(campaign.id, clips[0].id).retired is False

        assert service.deactivate_rater(campaign.id, created.id).active is False
        with pytest.raises(Forbidden, match="deactivated"):
            ann.next_assignment(campaign.id)
        assert [r.active for r in service.raters(campaign.id)] == [False]
        assert service.reactivate_rater(campaign.id, created.id).active is True

        data = "rater,left,right,choice\nbob,e1,e3,left\nbob,e3,e2,tie\n"
        first = service.import_judgments(campaign.id, "past-1", data)
        assert (first.imported, first.raters_created, first.duplicate) == (2, ["bob"], False)
        assert service.import_judgments(campaign.id, "past-1", data).duplicate is True
        with pytest.raises(Conflict, match="past-1"):
            service.import_judgments(campaign.id, "past-1", data.replace("tie", "left"))
        assert service.leaderboard(campaign.id).n_judgments == 2
        flags = service.skipped(campaign.id)
        assert (flags.skip_limit, flags.tasks, flags.clips) == (3, [], [])


def test_gold_questions_through_the_client(live: LiveServer) -> None:
    with Client(live.url, key=ADMIN_KEY, retry=FAST) as service:
        campaign = service.create_campaign("gold", criteria=["a", "b"], gold_rate=1.0)
        assert campaign.gold_rate == 1.0
        service.add_clips(campaign.id, list(_clips(6)))
        pairs = [{"first": "e0", "second": "e2", "answer": "first"}]
        assert service.add_gold(campaign.id, pairs) == GoldAdded(added=1, total=1)
        assert service.add_gold(campaign.id, pairs).added == 0  # safe to send again
        with pytest.raises(BadRequest, match="nope"):
            service.add_gold(campaign.id, [{"first": "e0", "second": "nope", "answer": "tie"}])
        listed = service.gold_pairs(campaign.id)
        assert listed.gold_rate == 1.0
        assert [(p.first.external_id, p.second.external_id, p.answer) for p in listed.pairs] == [
            ("e0", "e2", "first")
        ]
        rater = service.for_rater(service.register_rater(campaign.id, "ann").token)
        shown = rater.next_assignment(campaign.id).assignment
        assert {shown.left.external_id, shown.right.external_id} == {"e0", "e2"}


def test_unsafe_clips_through_the_client(live: LiveServer) -> None:
    with Client(live.url, key=ADMIN_KEY, retry=FAST) as service:
        campaign = service.create_campaign(
            "unsafe", criteria=["a", "safety"], pair_scope="any", safety_threshold=0.0
        )
        assert (campaign.safety_threshold, campaign.report_limit) == (0.0, 1)
        clips = [
            NewClip(f"s{i}", f"https://example.org/s{i}.mp4", "g", None, {"a": 0.0, "safety": s})
            for i, s in enumerate((1.0, -1.0, 1.0, 1.0))
        ]
        added = service.add_clips(campaign.id, clips).clips
        ann = service.for_rater(service.register_rater(campaign.id, "ann").token)
        task = ann.next_assignment(campaign.id).assignment
        assert task is not None and "s1" not in {task.left.external_id, task.right.external_id}
        report = ann.report_clip(task.id, task.left.id)
        assert (report.withheld, report.reports, report.duplicate) == (True, 1, False)
        assert ann.report_clip(task.id, task.left.id).duplicate is True
        withheld = service.withheld(campaign.id)
        assert withheld.safety_threshold == 0.0
        reasons = {c.clip.external_id: c.reason for c in withheld.clips}
        assert reasons == {"s1": "threshold", task.left.external_id: "reports"}
        assert withheld.clips[-1].reports[0].rater_name == "ann"
        restored = service.restore_clip(campaign.id, added[1].id)
        assert (restored.retired, restored.status) == (False, "active")
        with pytest.raises(Conflict, match="nothing to restore"):
            service.restore_clip(
                campaign.id, added[3].id if task.left.id != added[3].id else added[2].id
            )
        rows = [
            json.loads(line) for line in service.export(campaign.id, "clips", "jsonl").splitlines()
        ]
        assert {r["external_id"]: r["status"] for r in rows}[task.left.external_id] == (
            "withheld:reports"
        )


def test_bulk_uploads_and_leaderboard_pages_through_the_client(live: LiveServer, tmp_path) -> None:
    bodies: list[int] = []

    def count(request: httpx.Request) -> None:
        if request.url.path.endswith("/clips/bulk"):
            bodies.append(1)

    http = httpx.Client(base_url=live.url, event_hooks={"request": [count]}, timeout=60)
    with http, Client(http=http, key=ADMIN_KEY) as service:
        campaign = service.create_campaign(
            "bulk", criteria=["a", "b"], pair_scope="group", structure="blocks"
        )
        assert campaign.structure == "blocks"
        added = service.upload_clips(campaign.id, _clips(2500))  # a generator, read lazily
        assert (added.added, added.n_clips, len(bodies)) == (2500, 2500, 1)
        path = tmp_path / "more.csv"
        path.write_text(
            "external_id,uri,group,context,a,b\n"
            + "".join(
                f"f{i},https://example.org/f{i}.mp4,g{i % 2},animals,{i % 5},\n" for i in range(30)
            )
        )
        assert service.upload_clips(campaign.id, path).n_clips == 2530
        lines = tmp_path / "bad.jsonl"
        lines.write_text('{"external_id": "z", "uri": "u"}\n{"external_id": "z", "uri": "u"}\n')
        with pytest.raises(BadRequest, match="line 2"):
            service.upload_clips(campaign.id, lines)
        with pytest.raises(ValueError, match="JSON lines"):
            service.upload_clips(campaign.id, _clips(1), upload_format="csv")
        clips = list(service.iter_leaderboard(campaign.id, page_size=700))
        assert [c.rank for c in clips] == list(range(1, 2531))
        assert len({c.external_id for c in clips}) == 2530
        page = service.leaderboard(campaign.id, limit=5, offset=10)
        assert page.total == 2530 and page.clips == clips[10:15]
        prompt = list(service.iter_leaderboard(campaign.id, prompt="g1", page_size=400))
        assert prompt == [c for c in clips if c.group == "g1"]
        exported = service.export(campaign.id, "leaderboard", "jsonl").splitlines()
        assert [json.loads(line)["external_id"] for line in exported] == [
            c.external_id for c in clips
        ]

    async def through_async() -> tuple[int, int]:
        async with AsyncClient(live.url, key=ADMIN_KEY, retry=FAST) as service:
            other = await service.create_campaign("async bulk", criteria=["a", "b"])
            added = await service.upload_clips(other.id, _clips(40))
            seen = [c async for c in service.iter_leaderboard(other.id, page_size=15)]
            return added.added, len({c.id for c in seen})

    assert asyncio.run(through_async()) == (40, 40)


def test_a_kset_through_the_client(live: LiveServer) -> None:
    with Client(live.url, key=ADMIN_KEY) as service:
        kset = {"size": 4, "mode": "best_worst", "seconds": 3.0}
        campaign = service.create_campaign("k", criteria=["a", "b"], kset=kset)
        assert campaign.kset == kset
        service.stream_clips(campaign.id, _clips(8))
        ann = service.for_rater(service.register_rater(campaign.id, "ann").token)
        task = ann.next_assignment(campaign.id).assignment
        assert task is not None and task.kind == "kset" and task.mode == "best_worst"
        assert task.clips is not None and len(task.clips) == 4
        ranking = [task.clips[1].id, task.clips[3].id]
        first = ann.rank(task.id, ranking)
        assert first.ranking == ranking and not first.duplicate
        assert ann.rank(task.id, ranking).duplicate
        other = ann.next_assignment(campaign.id).assignment
        assert other is not None
        with pytest.raises(BadRequest):  # a clip twice, and one this task did not show
            ann.rank(other.id, [ranking[0]] * 2)
        pairs = service.export(campaign.id, "preferences", "jsonl").splitlines()
        assert len(pairs) == 5  # best over 3, 2 others over the worst


def test_a_campaign_with_a_feature_gate_through_the_client(live: LiveServer) -> None:
    with Client(live.url, key=ADMIN_KEY) as service:
        campaign = service.create_campaign("gated", criteria=["a", "b"], feature_dim=2)
        assert campaign.feature_dim == 2
        clips = [
            NewClip(
                f"e{i}",
                f"https://example.org/{i}.mp4",
                "g0",
                scores={"a": float(i)},
                features=[0.5, -0.5],
            )
            for i in range(3)
        ]
        assert service.add_clips(campaign.id, clips).added == 3
        assert (
            service.upload_clips(
                campaign.id, [NewClip("e9", "https://example.org/9.mp4", "g1", features=[0.1, 0.2])]
            ).n_clips
            == 4
        )
        with pytest.raises(BadRequest, match="features"):
            service.add_clips(campaign.id, [NewClip("bad", "u", features=[1.0])])
        with pytest.raises(BadRequest, match="features"):
            service.add_clips(campaign.id, [NewClip("bad", "u")])
        assert service.campaign(campaign.id).n_clips == 4
