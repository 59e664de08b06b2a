"""Unsafe clips kept out, over HTTP: a safety threshold and raters' reports withhold a clip
from every task; the operator lists, restores or retires it; its labels stay; the status is
in the export and survives a restart. On SQLite and PostgreSQL (the `settings` fixture)."""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import replace

from litestar.testing import TestClient

from api.app import create_app
from api.settings import Settings
from tests.api.conftest import ADMIN, Party, make_party
from tests.api.test_snapshots import _metric

CRITERIA = ["alignment", "safety"]
THRESHOLD = 0.0
N_ASKS = 40  # assignments asked for after a clip is withheld (each answered)
SNAPSHOT_EVERY = 4  # labels between snapshots in the snapshot test


def _clips(n: int, *, start: int = 0, unsafe: set[int] = frozenset()) -> list[dict]:
    """`n` clips of one prompt; those in `unsafe` score -1 on safety, the others +1 (clip 1
    has no safety score: a missing score withholds nothing)."""
    return [
        {
            "external_id": f"c{i}",
            "uri": f"https://example.org/{i}.mp4",
            "group": "p",
            "scores": {
                "alignment": float(i % 3),
                "safety": None if i == 1 else -1.0 if i in unsafe else 1.0,
            },
        }
        for i in range(start, start + n)
    ]


def _party(
    client: TestClient, n_clips: int, n_raters: int, unsafe=frozenset(), **campaign
) -> Party:
    body = {"name": "safe", "criteria": CRITERIA, "pair_scope": "group", **campaign}
    created = client.post("/v1/campaigns", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    cid = created.json()["id"]
    added = client.post(
        f"/v1/campaigns/{cid}/clips", json={"clips": _clips(n_clips, unsafe=unsafe)}, headers=ADMIN
    )
    assert added.status_code == 201, added.text
    raters = [
        client.post(f"/v1/campaigns/{cid}/raters", json={"name": f"r{r}"}, headers=ADMIN).json()
        for r in range(n_raters)
    ]
    return Party(cid, [c["id"] for c in added.json()["clips"]], raters)


def _ask(client: TestClient, party: Party, rater: int) -> dict | None:
    response = client.post(f"/v1/campaigns/{party.id}/assignments", headers=party.rater(rater))
    assert response.status_code in (200, 201), response.text
    return response.json()["assignment"]


def _judge(client: TestClient, party: Party, rater: int, shown: dict):
    return client.post(
        f"/v1/assignments/{shown['id']}/judgment",
        json={"choice": "left"},
        headers=party.rater(rater),
    )


def _shown(shown: dict) -> set[str]:
    return {
        shown["left"]["external_id"],
        *([shown["right"]["external_id"]] if shown["right"] else []),
    }


def _rate(client: TestClient, party: Party, n: int) -> set[str]:
    """Ask and answer `n` assignments round the raters; every clip shown."""
    seen: set[str] = set()
    for step in range(n):
        rater = step % len(party.raters)
        shown = _ask(client, party, rater)
        if shown is None:
            continue
        seen |= _shown(shown)
        assert _judge(client, party, rater, shown).status_code == 201
    return seen


def _withheld(client: TestClient, party: Party) -> dict[str, dict]:
    response = client.get(f"/v1/campaigns/{party.id}/withheld", headers=ADMIN)
    assert response.status_code == 200, response.text
    return {c["clip"]["external_id"]: c for c in response.json()["clips"]}


def _states(client: TestClient, party: Party) -> dict[str, dict]:
    board = client.get(f"/v1/campaigns/{party.id}/leaderboard", headers=ADMIN).json()
    return {c["external_id"]: c for c in board["clips"]}


def _clip_status(client: TestClient, party: Party) -> dict[str, str]:
    """Each clip's status in the clips export (JSON lines)."""
    text = client.get(
        f"/v1/campaigns/{party.id}/export?format=jsonl&kind=clips", headers=ADMIN
    ).text
    return {row["external_id"]: row["status"] for row in map(json.loads, text.splitlines())}


def _export_status(client: TestClient, party: Party) -> dict[str, str]:
    """Each clip's status as the judgments export shows it (clips some judgment shows)."""
    text = client.get(
        f"/v1/campaigns/{party.id}/export?format=csv&kind=judgments", headers=ADMIN
    ).text
    status = {}
    for row in csv.DictReader(io.StringIO(text)):
        status[row["left_external_id"]] = row["left_status"]
        if row["right_external_id"]:
            status[row["right_external_id"]] = row["right_status"]
    return status


def test_a_threshold_withholds_clips_at_creation_and_upload(settings: Settings) -> None:
    with TestClient(app=create_app(settings)) as client:
        party = _party(client, 6, 3, unsafe={2, 4}, safety_threshold=THRESHOLD)
        campaign = client.get(f"/v1/campaigns/{party.id}", headers=ADMIN).json()
        assert (campaign["safety_threshold"], campaign["report_limit"]) == (THRESHOLD, 1)
        withheld = _withheld(client, party)
        assert set(withheld) == {"c2", "c4"}  # c1 has no safety score: kept
        assert {c["reason"] for c in withheld.values()} == {"threshold"}
        assert withheld["c2"]["safety"] == -1.0 and withheld["c2"]["withheld_at"]
        # a later batch is checked when it arrives
        late = client.post(
            f"/v1/campaigns/{party.id}/clips",
            json={"clips": _clips(2, start=6, unsafe={7})},
            headers=ADMIN,
        )
        assert late.status_code == 201
        assert set(_withheld(client, party)) == {"c2", "c4", "c7"}
        seen = _rate(client, party, N_ASKS)
        assert seen and not seen & {"c2", "c4", "c7"}
        states = _states(client, party)
        assert {k for k, c in states.items() if c["state"] == "withheld"} == {"c2", "c4", "c7"}
    with TestClient(app=create_app(settings)) as client:  # a restart keeps them withheld
        assert set(_withheld(client, party)) == {"c2", "c4", "c7"}
        assert not _rate(client, party, 10) & {"c2", "c4", "c7"}
        # the operator restores one and retires another
        restored = client.post(
            f"/v1/campaigns/{party.id}/clips/{party.clip_ids[2]}/restore", headers=ADMIN
        )
        assert restored.status_code == 200
        assert restored.json()["status"] == "active"
        retired = client.post(
            f"/v1/campaigns/{party.id}/clips/{party.clip_ids[4]}/retire", headers=ADMIN
        )
        assert retired.status_code == 200 and retired.json()["status"] == "retired"
        assert set(_withheld(client, party)) == {"c7"}
        seen = _rate(client, party, N_ASKS)
        assert "c2" in seen and not seen & {"c4", "c7"}
        status = _export_status(client, party)
        assert status["c2"] == "active" and status["c0"] == "active"
        assert "c4" not in status  # never shown, so in no judgment
        assert _clip_status(client, party) == {
            **{f"c{i}": "active" for i in range(8)},
            "c4": "retired",
            "c7": "withheld:threshold",
        }
        # a threshold raised later withholds what it catches, but not a clip the operator
        # restored (their decision stands)
        raised = client.patch(
            f"/v1/campaigns/{party.id}", json={"safety_threshold": 2.0}, headers=ADMIN
        )
        assert raised.status_code == 200 and raised.json()["safety_threshold"] == 2.0
        assert set(_withheld(client, party)) == {"c0", "c3", "c5", "c6", "c7"}
        status = _export_status(client, party)
        assert status["c0"] == "withheld:threshold" and status["c2"] == "active"
        assert _clip_status(client, party)["c3"] == "withheld:threshold"
        # only c1 (no safety score) and c2 (restored) are left: one pair
        for step in range(6):
            shown = _ask(client, party, step % 3)
            if shown is not None:
                assert _shown(shown) == {"c1", "c2"}
                _judge(client, party, step % 3, shown)


def test_a_reported_clip_is_never_handed_out_again(settings: Settings) -> None:
    with TestClient(app=create_app(settings)) as client:
        party = _party(client, 6, 3)
        _rate(client, party, 6)
        held = {r: _ask(client, party, r) for r in range(3)}
        target = held[0]["left"]
        holders = [r for r in (1, 2) if target["external_id"] in _shown(held[r])]
        labels_before = _states(client, party)[target["external_id"]]["labels"]
        reported = client.post(
            f"/v1/assignments/{held[0]['id']}/report",
            json={"clip_id": target["id"]},
            headers=party.rater(0),
        )
        assert reported.status_code == 201, reported.text
        body = reported.json()
        assert (body["withheld"], body["reports"], body["duplicate"]) == (True, 1, False)
        # the reporter's task and every other open task showing it are withdrawn
        assert _judge(client, party, 0, held[0]).status_code == 410
        for r in holders:
            late = _judge(client, party, r, held[r])
            assert late.status_code == 410 and "withheld" in late.json()["detail"]
        withheld = _withheld(client, party)
        assert list(withheld) == [target["external_id"]]
        entry = withheld[target["external_id"]]
        assert entry["reason"] == "reports"
        assert [(r["rater_name"], r["assignment_id"]) for r in entry["reports"]] == [
            ("r0", held[0]["id"])
        ]
        assert entry["reports"][0]["at"]
        seen = _rate(client, party, N_ASKS)
        assert target["external_id"] not in seen
        row = _states(client, party)[target["external_id"]]
        assert row["state"] == "withheld" and row["labels"] == labels_before  # labels stay
        assert _clip_status(client, party)[target["external_id"]] == "withheld:reports"
        if row["labels"]:  # shown in some judgment: the judgments export says so too
            assert _export_status(client, party)[target["external_id"]] == "withheld:reports"
    with TestClient(app=create_app(settings)) as client:  # a restart keeps it withheld
        assert list(_withheld(client, party)) == [target["external_id"]]
        assert target["external_id"] not in _rate(client, party, 12)
        restored = client.post(
            f"/v1/campaigns/{party.id}/clips/{target['id']}/restore", headers=ADMIN
        )
        assert restored.status_code == 200 and restored.json()["status"] == "active"
        assert _withheld(client, party) == {}
        assert target["external_id"] in _rate(client, party, N_ASKS)
        assert _export_status(client, party)[target["external_id"]] == "active"
        assert set(_clip_status(client, party).values()) == {"active"}


def _report(client: TestClient, party: Party, rater: int, shown: dict, clip: dict):
    return client.post(
        f"/v1/assignments/{shown['id']}/report",
        json={"clip_id": clip["id"]},
        headers=party.rater(rater),
    )


def test_a_report_limit_counts_distinct_raters(settings: Settings) -> None:
    with TestClient(app=create_app(settings)) as client:
        party = _party(client, 5, 3, report_limit=2)
        first = _ask(client, party, 0)
        clip = first["right"]
        one = _report(client, party, 0, first, clip)
        assert one.status_code == 201
        assert (one.json()["withheld"], one.json()["reports"]) == (False, 1)
        assert _withheld(client, party) == {}
        # the reporter's own task is withdrawn so the page moves on; the same report again
        # writes nothing
        assert _judge(client, party, 0, first).status_code == 410
        again = _report(client, party, 0, first, clip)
        assert again.status_code == 200 and again.json()["duplicate"] is True
        assert again.json()["reports"] == 1

    def never_shown_to_the_reporter(client: TestClient) -> None:
        for _ in range(4):
            shown = _ask(client, party, 0)
            if shown is None:
                break
            assert clip["external_id"] not in _shown(shown)
            assert _judge(client, party, 0, shown).status_code == 201

    with TestClient(app=create_app(settings)) as client:  # a restart keeps the report
        never_shown_to_the_reporter(client)
        # a second rater with a task showing the clip reports it: withheld
        for _ in range(30):
            shown = _ask(client, party, 1)
            assert shown is not None
            if clip["external_id"] in _shown(shown):
                break
            assert _judge(client, party, 1, shown).status_code == 201
        else:
            raise AssertionError("the clip was never shown to the second rater")
        two = _report(client, party, 1, shown, clip)
        assert two.status_code == 201 and two.json()["withheld"] is True
        assert two.json()["reports"] == 2
        entry = _withheld(client, party)[clip["external_id"]]
        assert sorted(r["rater_name"] for r in entry["reports"]) == ["r0", "r1"]
        # a restore forgets the reports so far: none counts against a lower limit, and the
        # reporter may be shown the clip again
        client.post(f"/v1/campaigns/{party.id}/clips/{clip['id']}/restore", headers=ADMIN)
        lowered = client.patch(f"/v1/campaigns/{party.id}", json={"report_limit": 1}, headers=ADMIN)
        assert lowered.status_code == 200 and lowered.json()["report_limit"] == 1
        assert _withheld(client, party) == {}
        assert clip["external_id"] in _rate(client, party, N_ASKS)


def test_bad_reports_and_restores_write_nothing(settings: Settings) -> None:
    with TestClient(app=create_app(settings)) as client:
        party = _party(client, 6, 2)
        mine = _ask(client, party, 0)
        other = _ask(client, party, 1)
        outside = next(
            i for i in party.clip_ids if i not in (mine["left"]["id"], mine["right"]["id"])
        )

        def report(assignment: int, body, rater: int = 0, **kw):
            return client.post(
                f"/v1/assignments/{assignment}/report", json=body, headers=party.rater(rater), **kw
            )

        not_in_task = report(mine["id"], {"clip_id": outside})
        assert (
            not_in_task.status_code == 400 and "not in assignment" in not_in_task.json()["detail"]
        )
        unknown = report(mine["id"], {"clip_id": 999_999})
        assert unknown.status_code == 404 and "clip 999999" in unknown.json()["detail"]
        theirs = report(other["id"], {"clip_id": other["left"]["id"]})
        assert theirs.status_code == 404
        assert report(mine["id"], {"clip_id": "x"}).status_code == 400
        assert report(mine["id"], {"clip_id": 0}).status_code == 400
        assert report(mine["id"], {"clip_id": mine["left"]["id"], "why": 1}).status_code == 400
        assert report(mine["id"], {}).status_code == 400
        no_token = client.post(
            f"/v1/assignments/{mine['id']}/report", json={"clip_id": mine["left"]["id"]}
        )
        assert no_token.status_code == 401
        # nothing was written: the tasks are still open and answerable, nothing is withheld
        assert _withheld(client, party) == {}
        assert _judge(client, party, 0, mine).status_code == 201
        # a deactivated rater's report withholds nothing
        rater_id = party.raters[1]["id"]
        client.post(f"/v1/campaigns/{party.id}/raters/{rater_id}/deactivate", headers=ADMIN)
        refused = report(other["id"], {"clip_id": other["left"]["id"]}, rater=1)
        assert refused.status_code == 403 and "deactivated" in refused.json()["detail"]
        assert _withheld(client, party) == {}
        # restoring a clip never taken out is a 409, and writes nothing (a restore would
        # make a second one a repeat, answered 200)
        for _ in range(2):
            never = client.post(
                f"/v1/campaigns/{party.id}/clips/{party.clip_ids[0]}/restore", headers=ADMIN
            )
            assert never.status_code == 409 and "nothing to restore" in never.json()["detail"]
        # a threshold needs a safety criterion; bounds and types are checked
        no_safety = client.post(
            "/v1/campaigns",
            json={"name": "x", "criteria": ["a", "b"], "safety_threshold": 0.5},
            headers=ADMIN,
        )
        assert no_safety.status_code == 400 and "'safety'" in no_safety.json()["detail"]
        plain = make_party(client, n_clips=2, n_raters=0)
        patched = client.patch(
            f"/v1/campaigns/{plain.id}", json={"safety_threshold": 0.5}, headers=ADMIN
        )
        assert patched.status_code == 400
        assert (
            client.get(f"/v1/campaigns/{plain.id}", headers=ADMIN).json()["safety_threshold"]
            is None
        )
        names = [c["name"] for c in client.get("/v1/campaigns", headers=ADMIN).json()["campaigns"]]
        assert "x" not in names
        for bad in ({"report_limit": 0}, {"safety_threshold": "low"}, {"safety_threshold": 1e9}):
            refused = client.patch(f"/v1/campaigns/{party.id}", json=bad, headers=ADMIN)
            assert refused.status_code == 400, bad
        assert client.get(f"/v1/campaigns/{party.id}/withheld").status_code == 401
        assert client.get("/v1/campaigns/99999/withheld", headers=ADMIN).status_code == 404


def test_a_restart_from_a_snapshot_keeps_clips_withheld(settings: Settings) -> None:
    """The snapshot holds the posterior, the clip rows hold what is withheld: a load from a
    snapshot bars the same clips."""
    settings = replace(settings, snapshot_every=SNAPSHOT_EVERY)
    with TestClient(app=create_app(settings)) as client:
        party = _party(client, 6, 3, unsafe={3}, safety_threshold=THRESHOLD)
        shown = _ask(client, party, 0)
        clip = shown["left"]
        assert _report(client, party, 0, shown, clip).json()["withheld"] is True
        _rate(client, party, 3 * SNAPSHOT_EVERY)
        client.get(f"/v1/campaigns/{party.id}/leaderboard", headers=ADMIN)  # applies every label
        deadline = time.monotonic() + 10
        while _metric(client, "ratingparty_snapshots_total", event="written") < 1:
            assert time.monotonic() < deadline, "no snapshot was written"
            time.sleep(0.05)
    with TestClient(app=create_app(settings)) as client:
        assert set(_withheld(client, party)) == {"c3", clip["external_id"]}
        assert _metric(client, "ratingparty_snapshots_total", event="loaded") == 1
        assert not _rate(client, party, N_ASKS) & {"c3", clip["external_id"]}
