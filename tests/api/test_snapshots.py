"""Snapshots: a restart loads the latest snapshot and replays only the labels after it, to the
same state as a replay of the whole log; a snapshot of another format, or one that does not
load, is refused for a full replay; a campaign still loading answers 503 with Retry-After."""

from __future__ import annotations

import pickle
import re
import time
from dataclasses import replace

import pytest
from litestar.testing import TestClient

from api import restore
from api.app import create_app
from api.settings import Settings
from tests.api.conftest import ADMIN, assert_close_structures, clip_batch, make_party, run_sql
from tests.api.test_restart import _reads

SNAPSHOT_EVERY = 5
PART_BYTES = 4096  # small parts: a test campaign's snapshot takes many
N_LABELS = 23


def _metric(client: TestClient, name: str, **labels: str) -> float:
    """A counter's value from /metrics (0 when it was never counted)."""
    text_ = client.get("/metrics", headers=ADMIN).text
    shown = ",".join(f'{k}="{v}"' for k, v in labels.items())
    found = re.search(rf"^{name}\{{{re.escape(shown)}\}} (\S+)$", text_, re.MULTILINE)
    return 0.0 if found is None else float(found.group(1))


def _rated(settings: Settings) -> tuple[int, tuple[dict, dict, dict]]:
    """A campaign with N_LABELS labels and a clip batch after the first snapshot; its reads."""
    with TestClient(app=create_app(settings)) as client:
        party = make_party(client, n_clips=6, n_raters=3, groups=2, emoji_levels=5)
        for step in range(N_LABELS + 1):
            if step == 12:
                more = {"clips": clip_batch(3, start=6, groups=2)}
                added = client.post(f"/v1/campaigns/{party.id}/clips", json=more, headers=ADMIN)
                assert added.status_code == 201
            rater = step % 3
            shown = client.post(
                f"/v1/campaigns/{party.id}/assignments", headers=party.rater(rater)
            ).json()["assignment"]
            body = {"level": step % 5} if shown["kind"] == "rating" else {"choice": "left"}
            if step == 7:
                body = {"choice": "skip"} if shown["kind"] == "pair" else body
            judged = client.post(
                f"/v1/assignments/{shown['id']}/judgment", json=body, headers=party.rater(rater)
            )
            assert judged.status_code == 201
        reads = _reads(client, party.id)
        assert reads[0]["n_judgments"] in (N_LABELS, N_LABELS + 1)
        # reads apply every label; the snapshot after the last full SNAPSHOT_EVERY is written
        # (labels applied in one micro-batch take one snapshot: wait for its labels, not for
        # a count of snapshots)
        deadline = time.monotonic() + 30
        last_full = N_LABELS // SNAPSHOT_EVERY * SNAPSHOT_EVERY
        query = "SELECT max(labels) FROM campaign_snapshot WHERE campaign_id = :c"
        while (run_sql(settings, query, c=party.id)[0][0] or 0) < last_full:
            assert time.monotonic() < deadline, "no snapshot of the last labels was written"
            time.sleep(0.05)
    return party.id, reads


@pytest.mark.slow
def test_a_restart_replays_only_the_tail_to_the_state_of_a_full_replay(settings: Settings) -> None:
    settings = replace(settings, snapshot_every=SNAPSHOT_EVERY)
    cid, before = _rated(settings)
    n_labels = before[0]["n_judgments"]
    ((labels_in_snapshot,),) = run_sql(
        settings, "SELECT labels FROM campaign_snapshot WHERE campaign_id = :c", c=cid
    )
    assert labels_in_snapshot % SNAPSHOT_EVERY < SNAPSHOT_EVERY and labels_in_snapshot >= 15

    with TestClient(app=create_app(settings)) as client:
        from_snapshot = _reads(client, cid)
        assert _metric(client, "ratingparty_snapshots_total", event="loaded") == 1
        assert _metric(client, "ratingparty_replayed_labels_total", start="snapshot") == (
            n_labels - labels_in_snapshot
        )
        assert _metric(client, "ratingparty_replayed_labels_total", start="log") == 0

    # snapshots off: the whole log is replayed, to the same state
    with TestClient(app=create_app(replace(settings, snapshot_every=0))) as client:
        full = _reads(client, cid)
        assert _metric(client, "ratingparty_replayed_labels_total", start="log") == n_labels
    assert_close_structures(from_snapshot, full)
    assert_close_structures(before, full)


@pytest.mark.slow
def test_labels_whose_marks_were_lost_are_marked_at_the_load_and_not_applied_twice(
    settings: Settings,
) -> None:
    """A server that died between applying labels and writing their batch marks: the next
    load replays them and marks them, so a snapshot taken after holds them and a restart
    from it does not apply them again (the state is a full replay's)."""
    settings = replace(settings, snapshot_every=SNAPSHOT_EVERY)
    cid, _ = _rated(settings)
    (last,) = run_sql(settings, "SELECT max(batch) FROM judgment WHERE campaign_id = :c", c=cid)[0]
    lost = run_sql(
        settings,
        "UPDATE judgment SET batch = NULL WHERE campaign_id = :c AND batch >= :b RETURNING seq",
        c=cid,
        b=last - 1,
    )
    assert lost
    run_sql(settings, "DELETE FROM campaign_snapshot WHERE campaign_id = :c", c=cid)

    with TestClient(app=create_app(settings)) as client:
        party_reads = _reads(client, cid)
        n_labels = party_reads[0]["n_judgments"]
        # more labels, past a multiple of SNAPSHOT_EVERY: a snapshot that holds the lost ones
        tokens = [r["token"] for r in _new_raters(client, cid, 1)]
        for _ in range(SNAPSHOT_EVERY + 1):
            shown = client.post(
                f"/v1/campaigns/{cid}/assignments", headers={"Authorization": f"Bearer {tokens[0]}"}
            ).json()["assignment"]
            body = {"level": 1} if shown["kind"] == "rating" else {"choice": "right"}
            judged = client.post(
                f"/v1/assignments/{shown['id']}/judgment",
                json=body,
                headers={"Authorization": f"Bearer {tokens[0]}"},
            )
            assert judged.status_code == 201
        before = _reads(client, cid)
        n_labels = before[0]["n_judgments"]
        deadline = time.monotonic() + 30
        query = "SELECT max(labels) FROM campaign_snapshot WHERE campaign_id = :c"
        while (run_sql(settings, query, c=cid)[0][0] or 0) < n_labels - SNAPSHOT_EVERY:
            assert time.monotonic() < deadline, "no snapshot was written after the load"
            time.sleep(0.05)
    unmarked = (
        "SELECT count(*) FROM judgment WHERE campaign_id = :c AND seq IS NOT NULL AND batch IS NULL"
    )
    assert run_sql(settings, unmarked, c=cid) == [(0,)]

    with TestClient(app=create_app(settings)) as client:
        from_snapshot = _reads(client, cid)
        assert _metric(client, "ratingparty_snapshots_total", event="loaded") == 1
    with TestClient(app=create_app(replace(settings, snapshot_every=0))) as client:
        full = _reads(client, cid)
    assert from_snapshot[0]["n_judgments"] == full[0]["n_judgments"] == n_labels
    assert_close_structures(from_snapshot, full)
    assert_close_structures(before, full)


def _new_raters(client: TestClient, cid: int, count: int) -> list[dict]:
    made = []
    for k in range(count):
        response = client.post(
            f"/v1/campaigns/{cid}/raters", json={"name": f"late{k}"}, headers=ADMIN
        )
        assert response.status_code == 201, response.text
        made.append(response.json())
    return made


@pytest.mark.slow
def test_a_snapshot_is_stored_in_parts_and_only_the_latest_ones_are_kept(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each part is its own transaction of the writer; the row names the parts' key, the parts
    of the snapshots before are deleted, and a restart loads the parts joined."""
    monkeypatch.setattr(restore, "SNAPSHOT_PART_BYTES", PART_BYTES)
    settings = replace(settings, snapshot_every=SNAPSHOT_EVERY)
    cid, before = _rated(settings)
    ((key, inline),) = run_sql(
        settings,
        "SELECT parts_key, length(data) FROM campaign_snapshot WHERE campaign_id = :c",
        c=cid,
    )
    parts = run_sql(
        settings,
        "SELECT snapshot_key, part, length(data) FROM campaign_snapshot_part "
        "WHERE campaign_id = :c ORDER BY part",
        c=cid,
    )
    assert key is not None and inline == 0
    assert {k for k, _, _ in parts} == {key}  # the earlier snapshots' parts are gone
    assert [p for _, p, _ in parts] == list(range(len(parts))) and len(parts) > 2
    assert all(size == PART_BYTES for _, _, size in parts[:-1]) and 0 < parts[-1][2] <= PART_BYTES

    with TestClient(app=create_app(settings)) as client:
        from_snapshot = _reads(client, cid)
        assert _metric(client, "ratingparty_snapshots_total", event="loaded") == 1
    assert_close_structures(before, from_snapshot)


@pytest.mark.slow
@pytest.mark.parametrize("tamper", ["format", "data"])
def test_a_snapshot_of_another_format_or_that_does_not_load_is_refused(
    settings: Settings, tamper: str
) -> None:
    settings = replace(settings, snapshot_every=SNAPSHOT_EVERY)
    cid, before = _rated(settings)
    if tamper == "format":
        run_sql(settings, "UPDATE campaign_snapshot SET format = 'v0 from elsewhere'")
    else:  # a pickle that would run a command if it were unpickled without restriction
        hostile = pickle.dumps(_Hostile())
        # the bytes are stored in parts (the row names their key): the hostile pickle is all
        run_sql(settings, "DELETE FROM campaign_snapshot_part WHERE part > 0")
        run_sql(settings, "UPDATE campaign_snapshot_part SET data = :d", d=hostile)
    with TestClient(app=create_app(settings)) as client:
        after = _reads(client, cid)
        assert _metric(client, "ratingparty_snapshots_total", event="refused") == 1
        assert (
            _metric(client, "ratingparty_replayed_labels_total", start="log")
            == (before[0]["n_judgments"])
        )
    assert_close_structures(before, after)
    assert not run_sql(settings, "SELECT 1 FROM campaign WHERE name = 'hacked'")


class _Hostile:
    def __reduce__(self) -> tuple:
        return (exec, ("raise SystemExit('unpickled a hostile snapshot')",))


def test_a_request_meeting_its_campaign_loading_gets_503_with_retry_after(
    settings: Settings,
) -> None:
    with TestClient(app=create_app(settings)) as client:
        party = make_party(client, n_clips=4, n_raters=1)
    with TestClient(app=create_app(replace(settings, load_wait_s=0.0))) as client:
        first = client.get(f"/v1/campaigns/{party.id}/leaderboard", headers=ADMIN)
        assert first.status_code == 503, first.text
        assert first.headers["retry-after"] == "1"
        assert "is loading" in first.json()["detail"]
        deadline = time.monotonic() + 30
        while (
            answer := client.get(f"/v1/campaigns/{party.id}/leaderboard", headers=ADMIN)
        ).status_code == 503:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert answer.status_code == 200 and len(answer.json()["clips"]) == 4


def test_a_block_form_campaign_that_has_chosen_pairs_snapshots_and_loads() -> None:
    """A campaign kept in blocks holds kept screens once it has chosen a pair; a snapshot
    leaves them out (they are rebuilt), so it loads with the restricted unpickler, holds the
    same posterior and chooses as a replay of the log does (the kept screens, within their
    tolerance, may choose otherwise)."""
    import torch

    from api.snapshots import dump, load
    from engine import Campaign, CampaignConfig, Judgment, Outcome

    campaign = Campaign(CampaignConfig(criteria=("a",), pair_scope="group", structure="blocks"))
    scores = torch.linspace(-1.0, 1.0, 12, dtype=torch.float64)[:, None]
    campaign.add_clips(scores, groups=[i // 4 for i in range(12)])
    for step in range(6):
        (task,) = campaign.next_pairs(f"r{step % 2}")
        judgment = Judgment.pair(f"r{step % 2}", task.first, task.second, Outcome.WIN)
        campaign.observe([judgment], [task.id])
    campaign.next_pairs("r0", hold=False)  # kept screens in the form now
    loaded = load(dump(campaign), campaign)
    before, after = campaign.leaderboard(), loaded.leaderboard()
    assert torch.equal(torch.as_tensor(before.mean), torch.as_tensor(after.mean))
    again = [(t.first, t.second) for t in campaign.replay().next_pairs("r1", hold=False)]
    assert [(t.first, t.second) for t in loaded.next_pairs("r1", hold=False)] == again


def test_a_due_snapshot_waits_for_spacing_times_the_latest_ones_duration() -> None:
    """`Snapshots.due`: due by its labels, a snapshot still waits until SNAPSHOT_SPACING times
    the latest one's duration has passed since that one started."""
    snapshots = restore.Snapshots(runtime=None)  # type: ignore[arg-type]
    assert not snapshots.due
    snapshots.request()
    assert snapshots.due  # none taken yet
    snapshots._started, snapshots._took = time.monotonic(), 1.0
    assert not snapshots.due
    snapshots._started -= restore.SNAPSHOT_SPACING * 1.0 + 0.1
    assert snapshots.due
