"""The rating page and the dashboard in headless chromium, against the real service.

A rater answers with the mouse and with keys, the answers reach the database, the dashboard
shows them and follows new ones; a double click is one label; an answer given offline survives
a reload, and one whose acknowledgement was lost is sent again and still counted once; a clip
reported from the page is withheld, and restored from the dashboard.
"""

from __future__ import annotations

import base64
import json
import re
import statistics
import time

import pytest

from tests.browser.conftest import ADMIN_KEY, N_TEST_CLIPS, Service

pytestmark = pytest.mark.slow

JUDGMENT_ROUTE = re.compile(r".*/v1/assignments/\d+/judgment$")
# records a short WebM clip in the browser itself (a square crossing a canvas): no encoder
# on the test machine is needed
RECORD_CLIP = """async ([seconds, hue]) => {
  const canvas = document.createElement("canvas");
  canvas.width = 96;
  canvas.height = 72;
  const draw = canvas.getContext("2d");
  const recorder = new MediaRecorder(canvas.captureStream(25), { mimeType: "video/webm" });
  const chunks = [];
  recorder.ondataavailable = (event) => chunks.push(event.data);
  const stopped = new Promise((resolve) => (recorder.onstop = resolve));
  recorder.start();
  const start = performance.now();
  for (let t = 0; t < seconds; t = (performance.now() - start) / 1000) {
    draw.fillStyle = `hsl(${hue}, 60%, 80%)`;
    draw.fillRect(0, 0, 96, 72);
    draw.fillStyle = `hsl(${hue}, 80%, 40%)`;
    draw.fillRect(8 + (70 * t) / seconds, 26, 18, 18);
    await new Promise((resolve) => setTimeout(resolve, 40));
  }
  recorder.stop();
  await stopped;
  const bytes = new Uint8Array(await new Blob(chunks).arrayBuffer());
  let text = "";
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text);
}"""
VIDEO_STATE = """() => [...document.querySelectorAll("#views video")].map((video) => ({
  time: video.currentTime, paused: video.paused, muted: video.muted, loop: video.loop,
}))"""


def open_rating_page(context, service: Service, campaign_id: int, token: str):  # type: ignore[no-untyped-def]
    page = context.new_page()
    page.goto(f"{service.url}/rate/{campaign_id}?token={token}")
    return page


def wait_for_task(page, previous: str = "") -> str:  # type: ignore[no-untyped-def]
    """Wait until a task other than `previous` is shown and takes input; return its id."""
    page.wait_for_function(
        "previous => { const s = document.getElementById('stage');"
        " return s.dataset.ready === 'true' && s.dataset.assignment"
        " && s.dataset.assignment !== previous; }",
        arg=previous,
    )
    return page.get_attribute("#stage", "data-assignment") or ""


def wait_for_text(page, element_id: str, text: str) -> None:  # type: ignore[no-untyped-def]
    """Wait until the element's text is `text` (a function, not a string: the page's CSP
    forbids eval)."""
    page.wait_for_function(
        "([id, text]) => document.getElementById(id).textContent === text",
        arg=[element_id, text],
        timeout=15_000,
    )


def wait_until_sent(page) -> None:  # type: ignore[no-untyped-def]
    page.wait_for_selector('#progress[data-pending="0"]', state="attached")


def test_rater_answers_with_mouse_and_keys_and_dashboard_shows_them(
    service: Service, context, artifacts
) -> None:
    campaign = service.create_campaign(ties=True)
    campaign_id = campaign["id"]
    token = service.add_rater(campaign_id, "ann")
    page = open_rating_page(context, service, campaign_id, token)
    foreign: list[str] = []
    page.on(
        "request",
        lambda request: (
            None if request.url.startswith((service.url, "data:")) else foreign.append(request.url)
        ),
    )
    task = wait_for_task(page)
    assert "token=" not in page.url  # the credential left the address bar
    assert page.locator("#views img").count() == 2
    page.screenshot(path=str(artifacts / "rate-page.png"))

    expected: dict[int, str] = {}
    actions = [
        ("left", lambda: page.click('button[data-choice="left"]')),
        ("right", lambda: page.click('figure[data-side="right"] img')),
        ("right", lambda: page.keyboard.press("ArrowRight")),
        ("tie", lambda: page.keyboard.press("3")),
        ("left", lambda: page.keyboard.press("1")),
        ("skip", lambda: page.keyboard.press("s")),
    ]
    for choice, act in actions:
        expected[int(task)] = choice
        act()
        task = wait_for_task(page, task)
    wait_until_sent(page)
    assert page.get_attribute("#progress", "data-count") == str(len(actions))
    stored = {assignment: choice for assignment, choice, _ in service.judgments(campaign_id)}
    assert stored == expected
    assert not foreign, f"the page fetched from outside the service: {foreign}"

    n_labels = sum(choice != "skip" for choice in expected.values())
    dashboard = context.new_page()
    dashboard.goto(f"{service.url}/dashboard/{campaign_id}?key={ADMIN_KEY}")
    wait_for_text(dashboard, "stat-labels", str(n_labels))
    assert "key=" not in dashboard.url
    chart = dashboard.locator("#leaderboard-chart")
    assert chart.get_attribute("data-rows") == str(N_TEST_CLIPS)
    assert dashboard.locator("#raters-table tbody tr").count() == 1
    assert dashboard.locator("#raters-table tbody td").nth(1).inner_text() == str(n_labels)
    dashboard.wait_for_selector("#accuracy-chart circle.point")
    dashboard.screenshot(path=str(artifacts / "dashboard.png"), full_page=True)

    # the dashboard follows labels as they arrive
    page.keyboard.press("2")
    wait_for_task(page, task)
    wait_until_sent(page)
    wait_for_text(dashboard, "stat-labels", str(n_labels + 1))


def test_double_click_is_one_label(service: Service, context) -> None:
    campaign_id = service.create_campaign(ties=False)["id"]
    page = open_rating_page(context, service, campaign_id, service.add_rater(campaign_id))
    first = wait_for_task(page)
    assert page.locator('button[data-choice="tie"]').count() == 0  # no ties in this campaign
    page.dblclick('button[data-choice="left"]')
    second = wait_for_task(page, first)
    page.dblclick('figure[data-side="right"] img')
    wait_for_task(page, second)
    wait_until_sent(page)
    page.wait_for_timeout(300)  # a stray second send would have landed by now
    assert service.judgments(campaign_id) == [
        (int(first), "left", None),
        (int(second), "right", None),
    ]
    assert page.get_attribute("#progress", "data-count") == "2"


def test_both_buttons_and_keys_only_where_the_campaign_takes_them(
    service: Service, context
) -> None:
    plain = service.create_campaign(ties=True)["id"]
    page = open_rating_page(context, service, plain, service.add_rater(plain))
    task = wait_for_task(page)
    for name in ("both_good", "both_bad"):
        assert page.locator(f'button[data-choice="{name}"]').count() == 0
    page.keyboard.press("g")  # no such answer here: nothing is sent, the task stays
    page.keyboard.press("5")
    page.wait_for_timeout(300)
    assert page.get_attribute("#stage", "data-assignment") == task
    assert service.judgments(plain) == []
    page.close()

    campaign_id = service.create_campaign(ties=True, both_threshold=0.5)["id"]
    page = open_rating_page(context, service, campaign_id, service.add_rater(campaign_id))
    task = wait_for_task(page)
    assert page.locator('button[data-choice="both_good"]').inner_text().startswith("Both good")
    assert page.locator('button[data-choice="both_bad"]').inner_text().startswith("Both bad")
    assert "G or 4 if both are good" in page.inner_text("#hint")
    expected: dict[int, str] = {}
    actions = [
        ("both_good", lambda: page.click('button[data-choice="both_good"]')),
        ("both_bad", lambda: page.click('button[data-choice="both_bad"]')),
        ("both_good", lambda: page.keyboard.press("g")),
        ("both_bad", lambda: page.keyboard.press("b")),
        ("both_good", lambda: page.keyboard.press("4")),
        ("both_bad", lambda: page.keyboard.press("5")),
        ("tie", lambda: page.keyboard.press("t")),
    ]
    for choice, act in actions:
        expected[int(task)] = choice
        act()
        task = wait_for_task(page, task)
    wait_until_sent(page)
    assert {a: c for a, c, _ in service.judgments(campaign_id)} == expected


def test_answer_given_offline_is_sent_after_a_reload(service: Service, context) -> None:
    campaign_id = service.create_campaign()["id"]
    page = open_rating_page(context, service, campaign_id, service.add_rater(campaign_id))
    task = wait_for_task(page)
    page.route(JUDGMENT_ROUTE, lambda route: route.abort("internetdisconnected"))
    page.keyboard.press("ArrowLeft")
    wait_for_task(page, task)  # the next task is shown while the answer waits
    page.wait_for_selector('#progress[data-pending="1"]', state="attached")
    page.wait_for_selector("#status.offline")
    assert service.judgments(campaign_id) == []

    page.unroute(JUDGMENT_ROUTE)
    page.reload()
    wait_until_sent(page)
    assert service.judgments(campaign_id) == [(int(task), "left", None)]
    assert page.get_attribute("#progress", "data-count") == "1"


def test_lost_acknowledgement_is_resent_and_counted_once(service: Service, context) -> None:
    campaign_id = service.create_campaign()["id"]
    page = open_rating_page(context, service, campaign_id, service.add_rater(campaign_id))
    task = wait_for_task(page)
    sends: list[str] = []

    def drop_first_answer(route) -> None:  # type: ignore[no-untyped-def]
        sends.append(route.request.url)
        if len(sends) == 1:
            route.fetch()  # the service stores the label ...
            route.abort("connectionreset")  # ... but the page never hears back
        else:
            route.continue_()

    page.route(JUDGMENT_ROUTE, drop_first_answer)
    page.keyboard.press("ArrowRight")
    wait_for_task(page, task)
    wait_until_sent(page)
    assert len(sends) >= 2
    assert service.judgments(campaign_id) == [(int(task), "right", None)]


def test_nothing_left_is_said_clearly(service: Service, context, artifacts) -> None:
    campaign_id = service.create_campaign(pair_scope="group")["id"]
    page = open_rating_page(context, service, campaign_id, service.add_rater(campaign_id))
    task = ""
    # two prompts of N_TEST_CLIPS / 2 clips: every same-prompt pair once, then nothing is left
    n_pairs = 2 * (N_TEST_CLIPS // 2) * (N_TEST_CLIPS // 2 - 1) // 2
    for _ in range(n_pairs):
        task = wait_for_task(page, task)
        page.keyboard.press("ArrowLeft")
    page.wait_for_selector("#done", state="visible")
    wait_until_sent(page)
    assert "Nothing left" in page.inner_text("#done")
    assert page.locator("#stage").is_hidden()
    assert len(service.judgments(campaign_id)) == n_pairs
    page.screenshot(path=str(artifacts / "rate-page-done.png"))


def test_emoji_scale_for_a_single_clip(service: Service, context, artifacts) -> None:
    campaign_id = service.create_campaign(emoji_levels=5)["id"]
    page = open_rating_page(context, service, campaign_id, service.add_rater(campaign_id))
    task, expected = "", {}
    for _ in range(3 * N_TEST_CLIPS):  # pairs and single clips come mixed: answer pairs left
        task = wait_for_task(page, task)
        if page.locator("button.emoji").count() == 0:
            expected[int(task)] = ("left", None)
            page.keyboard.press("ArrowLeft")
            continue
        assert page.locator("#views img").count() == 1
        assert page.locator("button.emoji").count() == 5
        if sum(level is not None for _, level in expected.values()) == 0:
            page.screenshot(path=str(artifacts / "rate-page-emoji.png"))
            expected[int(task)] = (None, 3)
            page.click('button[data-level="3"]')  # the mouse ...
        else:
            expected[int(task)] = (None, 4)
            page.keyboard.press("5")  # ... and the keys: 1 (worst) to 5 (best)
            break
    else:
        pytest.fail("no single-clip task came")
    wait_for_task(page, task)
    wait_until_sent(page)
    stored = {
        assignment: (choice, level) for assignment, choice, level in service.judgments(campaign_id)
    }
    assert stored == expected


def test_videos_loop_in_sync(service: Service, context) -> None:
    recorder = context.new_page()
    recorder.goto(f"{service.url}/static/rate.css")
    uris = []
    for index, hue in enumerate((20, 200)):
        clip = base64.b64decode(recorder.evaluate(RECORD_CLIP, [1.0, hue]))
        (service.media / f"video-{index}.webm").write_bytes(clip)
        uris.append(f"/media/video-{index}.webm")
    recorder.close()
    campaign_id = service.create_campaign(uris=uris)["id"]
    page = open_rating_page(context, service, campaign_id, service.add_rater(campaign_id))
    wait_for_task(page)
    page.wait_for_timeout(2500)  # past two loops of the one-second clips
    drifts = []
    for _ in range(8):
        videos = page.evaluate(VIDEO_STATE)
        assert len(videos) == 2
        assert all(v["muted"] and v["loop"] and not v["paused"] for v in videos), videos
        drifts.append(abs(videos[0]["time"] - videos[1]["time"]))
        page.wait_for_timeout(150)
    assert statistics.median(drifts) < 0.15, drifts


def test_a_clip_reported_from_the_page_is_withheld_and_restored_on_the_dashboard(
    service: Service, context, artifacts
) -> None:
    campaign_id = service.create_campaign(pair_scope="group")["id"]
    page = open_rating_page(context, service, campaign_id, service.add_rater(campaign_id, "ann"))
    task = wait_for_task(page)
    reported = page.get_attribute('figure[data-side="right"] img', "src")
    page.click('button[data-choice="report"]')  # the button, then which clip by key
    page.wait_for_selector('#stage[data-reporting="true"]')
    assert page.locator('button[data-choice="report-left"]').count() == 1
    page.screenshot(path=str(artifacts / "rate-page-report.png"))
    page.keyboard.press("ArrowRight")
    task = wait_for_task(page, task)
    wait_until_sent(page)
    assert "reported" in page.inner_text("#status")
    withheld = service.client.get(f"/v1/campaigns/{campaign_id}/withheld").json()["clips"]
    assert len(withheld) == 1 and withheld[0]["reason"] == "reports"
    index = int(re.search(r"clip-(\d+)\.png$", reported).group(1))  # /media/clip-00k.png
    assert withheld[0]["clip"]["external_id"] == f"clip-{index}"
    assert [r["rater_name"] for r in withheld[0]["reports"]] == ["ann"]
    assert service.judgments(campaign_id) == []  # a report is not an answer
    # the reported clip's prompt has 3 clips left: 3 pairs; the other prompt's 6
    for _ in range(6):
        assert reported not in [
            img.get_attribute("src") for img in page.locator("#views img").all()
        ]
        page.keyboard.press("1")
        task = wait_for_task(page, task)
    # X asks which clip; Esc goes back to the answers
    page.keyboard.press("x")
    page.wait_for_selector('#stage[data-reporting="true"]')
    page.keyboard.press("Escape")
    page.wait_for_selector('#stage[data-reporting="false"]')
    page.keyboard.press("1")
    wait_for_task(page, task)
    wait_until_sent(page)
    assert len(service.judgments(campaign_id)) == 7

    dashboard = context.new_page()
    dashboard.goto(f"{service.url}/dashboard/{campaign_id}?key={ADMIN_KEY}")
    row = dashboard.locator("#withheld-table tbody tr")
    row.wait_for()
    assert row.count() == 1 and row.get_attribute("data-reason") == "reports"
    assert "ann" in row.inner_text()
    dashboard.screenshot(path=str(artifacts / "dashboard-withheld.png"), full_page=True)
    row.locator("button", has_text="Restore").click()
    dashboard.wait_for_selector("#withheld-table", state="detached")
    assert service.client.get(f"/v1/campaigns/{campaign_id}/withheld").json()["clips"] == []


def test_the_dashboard_shows_side_offsets(service: Service, context) -> None:
    """A campaign that learns side offsets: a rater who always clicks left shows a positive
    offset in the raters table, and the global one under it."""
    campaign = service.create_campaign(side_bias={"global_sd": 0.5, "rater_sd": 0.5})
    campaign_id = campaign["id"]
    token = service.add_rater(campaign_id, "lefty")
    page = open_rating_page(context, service, campaign_id, token)
    task = wait_for_task(page)
    for _ in range(8):
        page.keyboard.press("ArrowLeft")
        task = wait_for_task(page, task)
    wait_until_sent(page)
    dashboard = context.new_page()
    dashboard.goto(f"{service.url}/dashboard/{campaign_id}?key={ADMIN_KEY}")
    dashboard.wait_for_selector("#raters-table td.side")
    header = dashboard.locator("#raters-table thead th").all_inner_texts()
    assert "side offset" in header
    mean = float(dashboard.locator("#raters-table td.side").inner_text().split(" ± ")[0])
    assert mean > 0
    assert "Side offset of all raters" in dashboard.locator("#side-offset").inner_text()


def test_the_dashboard_retires_a_clip_past_the_first_leaderboard_page(
    service: Service, context
) -> None:
    """The dashboard reads the leaderboard's first page only; retiring by external id asks
    the server, so a clip ranked past that page is found and retired too."""
    campaign_id = service.post("/v1/campaigns", {"name": "large", "criteria": ["alignment"]})["id"]
    rows = "".join(
        json.dumps(
            {
                "external_id": f"big-{index}",
                "uri": f"/media/clip-{index % N_TEST_CLIPS:03d}.png",
                "group": f"prompt {index // 4}",
                "context": "shapes",
                "scores": {"alignment": -float(index)},
            }
        )
        + "\n"
        for index in range(1_100)
    )
    upload = service.client.post(
        f"/v1/campaigns/{campaign_id}/clips/bulk",
        params={"format": "jsonl"},
        content=rows.encode(),
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert upload.status_code == 201, upload.text
    board = f"/v1/campaigns/{campaign_id}/leaderboard"
    first_page = service.client.get(board).json()
    assert first_page["total"] == 1_100 and len(first_page["clips"]) < 1_100
    late = service.client.get(board, params={"offset": 1_050, "limit": 1}).json()["clips"][0]
    assert late["external_id"] not in {clip["external_id"] for clip in first_page["clips"]}

    dashboard = context.new_page()
    errors: list[str] = []
    dashboard.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    dashboard.goto(f"{service.url}/dashboard/{campaign_id}?key={ADMIN_KEY}")
    dashboard.wait_for_selector("#leaderboard-chart")  # the page's script is running
    dashboard.fill("#retire-id", late["external_id"])
    dashboard.click("#retire-form button[type=submit]")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        found = service.client.get(board, params={"external_id": late["external_id"]}).json()
        if found["clips"][0]["state"] == "retired":
            break
        time.sleep(0.1)
    assert found["clips"][0]["state"] == "retired", (
        errors,
        dashboard.inner_text("#retire-message"),
        dashboard.inner_text("#controls-message"),
    )
    assert dashboard.inner_text("#retire-message") == ""
    dashboard.fill("#retire-id", "no-such-clip")
    dashboard.click("#retire-form button[type=submit]")
    wait_for_text(dashboard, "retire-message", "no clip no-such-clip")


def test_the_dashboard_shows_the_stopping_rule_and_sets_targets(
    service: Service, context, artifacts
) -> None:
    """A campaign whose one target is a widest 90 % interval of 100 is met from the start: the
    dashboard says it is done and why. A target of 1 set from the dashboard reopens it and
    shows the width now and the distance to go. The floor of labels per clip is shown and
    saved from the settings."""
    campaign = service.create_campaign(targets={"interval_width": 100.0})
    campaign_id = campaign["id"]
    dashboard = context.new_page()
    dashboard.goto(f"{service.url}/dashboard/{campaign_id}?key={ADMIN_KEY}")
    dashboard.wait_for_selector('body[data-done="true"]')
    status = dashboard.locator("#stopping-status").inner_text()
    assert status.startswith("Done: after 0 labels"), status
    assert "interval_width" in status and "met" in status
    row = dashboard.locator('#targets-table tr[data-target="interval_width"]')
    assert row.locator("td").last.inner_text() == "met"
    assert float(row.locator("td.distance").inner_text()) == 0
    assert dashboard.input_value("#target-width") == "100"
    assert dashboard.input_value("#target-tau") == ""

    dashboard.fill("#target-width", "1")
    dashboard.click("#save-targets")
    dashboard.wait_for_selector('body[data-done="false"]')
    status = dashboard.locator("#stopping-status").inner_text()
    assert status.startswith("Not done: after 0 labels"), status
    width = float(row.locator("td.value").inner_text())
    distance = float(row.locator("td.distance").inner_text())
    assert distance > 0 and width == pytest.approx(1 + distance, abs=2e-3)
    assert row.locator("td").last.inner_text() == ""
    stored = service.client.get(f"/v1/campaigns/{campaign_id}").json()
    assert stored["targets"] == {"interval_width": 1.0}
    dashboard.screenshot(path=str(artifacts / "dashboard-stopping.png"), full_page=True)

    assert dashboard.input_value("#min-labels") == "2"
    dashboard.fill("#min-labels", "3")
    dashboard.click("#save-settings")
    dashboard.wait_for_function(
        "() => document.getElementById('controls-message').textContent === ''"
    )
    for _ in range(50):
        if service.client.get(f"/v1/campaigns/{campaign_id}").json()["min_labels"] == 3:
            break
        dashboard.wait_for_timeout(100)
    assert service.client.get(f"/v1/campaigns/{campaign_id}").json()["min_labels"] == 3


def kset_answers(service: Service, campaign_id: int) -> dict[int, tuple[list[int], float]]:
    """Each K-set answer of the campaign: assignment id -> (ranking as clip ids, seconds)."""
    import json
    import sqlite3

    with sqlite3.connect(service.database) as connection:
        ids = dict(
            connection.execute(
                "SELECT position, id FROM clip WHERE campaign_id = ?", (campaign_id,)
            ).fetchall()
        )
        rows = connection.execute(
            "SELECT assignment_id, ranking, seconds FROM judgment"
            " WHERE campaign_id = ? AND ranking IS NOT NULL",
            (campaign_id,),
        ).fetchall()
    return {row[0]: ([ids[p] for p in json.loads(row[1])], row[2]) for row in rows}


def shown_clips(page) -> list[int]:  # type: ignore[no-untyped-def]
    """The current K-set's clip ids, in the order the grid shows them."""
    return [
        int(figure.get_attribute("data-clip") or 0)
        for figure in page.locator("#views figure").all()
    ]


def test_a_kset_grid_is_answered_by_clicks_and_by_number_keys(
    service: Service, context, artifacts
) -> None:
    kset = {"size": 4, "mode": "best_worst", "seconds": 3.0}
    campaign_id = service.create_campaign(kset=kset)["id"]
    page = open_rating_page(context, service, campaign_id, service.add_rater(campaign_id))
    task = wait_for_task(page)
    assert page.locator("#views .task.kset figure").count() == 4
    assert page.text_content("#question") == "Which one is best, and which worst?"
    clips = shown_clips(page)
    page.locator("#views figure").nth(2).click()  # best ...
    assert page.get_attribute("#views figure >> nth=2", "data-place") == "best"
    page.screenshot(path=str(artifacts / "rate-page-kset.png"))
    page.locator("#views figure").nth(0).click()  # ... then worst: sent
    expected = {int(task): [clips[2], clips[0]]}
    task = wait_for_task(page, task)
    assert page.locator("#views .task.kset figure").count() == 4
    clips = shown_clips(page)
    page.keyboard.press("2")
    page.keyboard.press("Backspace")  # undo: the best is clip 4 after all
    page.keyboard.press("4")
    page.keyboard.press("1")
    expected[int(task)] = [clips[3], clips[0]]
    wait_for_task(page, task)
    wait_until_sent(page)
    stored = kset_answers(service, campaign_id)
    assert {key: ranking for key, (ranking, _) in stored.items()} == expected
    # the page said when it showed each task: an answer took as long as the clicks did
    assert all(0 < seconds < 60 for _, seconds in stored.values())


def test_a_kset_is_ordered_with_number_keys(service: Service, context) -> None:
    campaign_id = service.create_campaign(kset={"size": 4, "mode": "rank", "seconds": 3.0})["id"]
    page = open_rating_page(context, service, campaign_id, service.add_rater(campaign_id))
    task = wait_for_task(page)
    assert page.text_content("#question") == "Order them, best first"
    clips = shown_clips(page)
    for key in ("3", "1", "4"):  # the last one left is the worst
        page.keyboard.press(key)
    wait_for_task(page, task)
    wait_until_sent(page)
    (ranking, _), *_ = kset_answers(service, campaign_id).values()
    assert ranking == [clips[2], clips[0], clips[3], clips[1]]


def test_a_kset_clip_is_reported_by_its_number(service: Service, context) -> None:
    kset = {"size": 4, "mode": "best", "seconds": 3.0}
    campaign_id = service.create_campaign(kset=kset)["id"]
    page = open_rating_page(context, service, campaign_id, service.add_rater(campaign_id, "ann"))
    task = wait_for_task(page)
    clips = shown_clips(page)
    page.keyboard.press("x")  # which clip? by number
    page.wait_for_selector('#stage[data-reporting="true"]')
    assert page.locator('button[data-choice^="report-clip-"]').count() == 4
    page.keyboard.press("3")
    wait_for_task(page, task)
    wait_until_sent(page)
    withheld = service.client.get(f"/v1/campaigns/{campaign_id}/withheld").json()["clips"]
    assert [clip["clip"]["id"] for clip in withheld] == [clips[2]]
    assert service.judgments(campaign_id) == []  # a report is not an answer
