// The campaign dashboard: leaderboard, labels against ranking accuracy, raters, criterion
// weights. Polls the admin endpoints every POLL_MS while the tab is visible.
import { ApiError, api, campaignId, h, isVideo, takeCredential } from "./common.js";
import { intervalChart, lineChart } from "./charts.js";

const CAMPAIGN = campaignId();
const KEY = takeCredential("key", `ratingparty:key:${CAMPAIGN}`);
const POLL_MS = 3000;
const TOP_ROWS = 40; // the leaderboard shows this many clips until "show all" is pressed
const PALETTE = ["#2f6fde", "#e07b22", "#2a9d5c", "#b844c9", "#c4a000", "#d64545", "#4aa3b8"];
const BASE = `/v1/campaigns/${CAMPAIGN}`;

const $ = (id) => document.getElementById(id);
let showAll = false;
let lastBoard = null;
let timer = null;

function number(value, digits = 2) {
  return value === null || value === undefined || Number.isNaN(value)
    ? "–"
    : Number(value).toFixed(digits);
}

function panelError(id, error) {
  $(id).replaceChildren(
    h("p", { class: "error-text" }, `Could not load: ${error.message || error}`),
  );
}

// ---------------------------------------------------------------- panels

const ACTIONS = { active: ["pause", "close"], paused: ["resume", "close"], closed: ["reopen"] };
let settingsShown = false;
let targetsShown = false;
// the target names of `/progress`, as the panel says them
const TARGET_NAMES = {
  expected_kendall_tau: "expected Kendall τ",
  kendall_tau_quantile: "Kendall τ reached with the set probability",
  interval_width: "widest 90 % interval",
};

function renderCampaign(campaign) {
  $("state").textContent = campaign.state;
  document.body.dataset.state = campaign.state;
  const allowed = ACTIONS[campaign.state] || [];
  for (const button of document.querySelectorAll("#controls [data-action]")) {
    button.hidden = !allowed.includes(button.dataset.action);
  }
  if (!settingsShown) {
    // filled once: a refresh must not overwrite what the operator is typing
    settingsShown = true;
    $("lease").value = String(campaign.lease_seconds);
    $("min-labels").value = String(campaign.min_labels ?? 0);
    const select = $("levels");
    for (let k = 2; k <= 11; k += 1) select.append(h("option", { value: String(k) }, String(k)));
    select.value = campaign.emoji_levels === null ? "" : String(campaign.emoji_levels);
  }
  if (!targetsShown) {
    targetsShown = true;
    const targets = campaign.targets || {};
    $("target-tau").value = targets.kendall_tau ?? "";
    $("target-confidence").value = targets.confidence ?? "";
    $("target-width").value = targets.interval_width ?? "";
  }
  $("title").textContent = campaign.name
    ? `${campaign.name} (campaign ${campaign.id})`
    : `Campaign ${campaign.id}`;
  document.title = `${campaign.name || `Campaign ${campaign.id}`}: dashboard`;
  $("stat-clips").textContent = String(campaign.n_clips);
  $("stat-raters").textContent = String(campaign.n_raters);
  $("stat-labels").textContent = String(campaign.n_judgments);
}

function renderLeaderboard(board) {
  lastBoard = board;
  renderClips(board);
  $("stat-labels").textContent = String(board.n_judgments);
  $("stat-tau").textContent = number(board.expected_kendall_tau, 3);
  $("leaderboard-level").textContent = `(${Math.round(board.level * 100)} % intervals)`;
  const clips = [...board.clips].sort((a, b) => a.rank - b.rank);
  const shown = showAll ? clips : clips.slice(0, TOP_ROWS);
  const toggle = $("show-all");
  toggle.hidden = clips.length <= TOP_ROWS;
  toggle.textContent = showAll ? `show the top ${TOP_ROWS}` : `show all ${clips.length}`;
  if (!clips.length) {
    $("leaderboard").replaceChildren(h("p", { class: "note" }, "No clips yet."));
    return;
  }
  const rows = shown.map((clip) => ({
    label: `${clip.rank}. ${clip.external_id}`,
    mean: clip.mean,
    lower: clip.lower,
    upper: clip.upper,
    image: clip.uri && !isVideo(clip.uri) ? clip.uri : null,
    title:
      `#${clip.rank} ${clip.external_id}${clip.group ? ` (${clip.group})` : ""}: ` +
      `${number(clip.mean)} [${number(clip.lower)}, ${number(clip.upper)}], ${clip.labels} labels`,
  }));
  const width = Math.max(560, Math.min(1100, $("leaderboard").clientWidth || 760));
  const chart = intervalChart(rows, { width, labelWidth: 190, axisLabel: "quality (JOD)" });
  chart.id = "leaderboard-chart";
  chart.dataset.rows = String(rows.length);
  $("leaderboard").replaceChildren(chart);
}

function renderProgress(progress) {
  const points = progress.points || [];
  const tau = points
    .filter((p) => p.expected_kendall_tau !== null && p.expected_kendall_tau !== undefined)
    .map((p) => ({ x: p.labels, y: p.expected_kendall_tau }));
  const timed = points.filter((p) => p.at).map((p) => ({ x: Date.parse(p.at), y: p.labels }));
  const span = timed.length ? timed[timed.length - 1].x - timed[0].x : 0;
  const clock = (ms) =>
    new Date(ms).toLocaleTimeString([], {
      hour: "2-digit",
      minute: "2-digit",
      second: span < 600_000 ? "2-digit" : undefined,
    });
  const accuracy = lineChart([{ name: "expected Kendall τ", color: PALETTE[0], points: tau }], {
    xLabel: "labels",
    yLabel: "expected Kendall τ",
    yMin: Math.min(0, ...tau.map((p) => p.y)),
    yMax: 1,
  });
  accuracy.id = "accuracy-chart";
  const labels = lineChart([{ name: "labels", color: PALETTE[2], points: timed }], {
    xLabel: "time",
    yLabel: "labels",
    yMin: 0,
    xFormat: clock,
  });
  labels.id = "labels-chart";
  $("progress").replaceChildren(accuracy, labels);
}

function renderStopping(progress) {
  const targets = progress.targets || [];
  const status = $("stopping-status");
  status.className = progress.done ? "done" : "";
  document.body.dataset.done = String(Boolean(progress.done));
  // the reason reads "done after N labels: ..." or "not done after N labels: ..."
  status.textContent = progress.done
    ? `Done: ${progress.reason.replace(/^done after /, "after ")}`
    : targets.length
      ? `Not done: ${progress.reason.replace(/^not done after /, "after ")}`
      : "No target set: the campaign runs until it is paused or closed.";
  if (!targets.length) {
    $("targets").replaceChildren();
    return;
  }
  const head = h(
    "tr",
    {},
    ["target", "wanted", "now", "to go", ""].map((text) => h("th", {}, text)),
  );
  const rows = targets.map((target) =>
    h(
      "tr",
      { "data-target": target.name, class: target.met ? "met" : "" },
      h("td", {}, TARGET_NAMES[target.name] || target.name),
      h("td", {}, `${target.name === "interval_width" ? "≤" : "≥"} ${number(target.target, 3)}`),
      h("td", { class: "value" }, number(target.value, 3)),
      h("td", { class: "distance" }, number(target.distance, 3)),
      h("td", {}, target.met ? "met" : ""),
    ),
  );
  $("targets").replaceChildren(
    h("table", { id: "targets-table" }, h("thead", {}, head), h("tbody", {}, rows)),
  );
}

function renderRaters(data) {
  const raters = data.raters || [];
  if (!raters.length) {
    $("raters").replaceChildren(h("p", { class: "note" }, "No raters yet."));
    return;
  }
  // a campaign that learns side offsets shows each rater's (positive: favours the left clip)
  const sided = data.side_offset != null;
  const side = (offset) => (offset == null ? "–" : `${number(offset.mean)} ± ${number(offset.sd)}`);
  const titles = ["rater", "labels", "skips", "noise sd", "keep prob."];
  const head = h(
    "tr",
    {},
    [...titles, ...(sided ? ["side offset"] : []), "flag", ""].map((text) => h("th", {}, text)),
  );
  const rows = raters.map((rater) =>
    h(
      "tr",
      { class: rater.flagged ? "flagged" : "", "data-rater": rater.id },
      h("td", {}, rater.name || `rater ${rater.id}`),
      h("td", {}, String(rater.labels)),
      h("td", {}, String(rater.skips ?? "–")),
      h("td", {}, number(rater.noise_sd)),
      h("td", {}, number(rater.keep_probability)),
      ...(sided ? [h("td", { class: "side" }, side(rater.side_offset))] : []),
      h("td", { class: "flag", title: flagTitle(rater) }, rater.flagged ? "⚑ check" : ""),
      h(
        "td",
        {},
        actionButton(
          rater.active === false ? "Reactivate" : "Deactivate",
          `${BASE}/raters/${rater.id}/${rater.active === false ? "reactivate" : "deactivate"}`,
        ),
      ),
    ),
  );
  const note = sided
    ? [
        h(
          "p",
          { class: "note", id: "side-offset" },
          `Side offset of all raters: ${side(data.side_offset)} ` +
            "(positive favours the clip shown left).",
        ),
      ]
    : [];
  $("raters").replaceChildren(
    h("table", { id: "raters-table" }, h("thead", {}, head), h("tbody", {}, rows)),
    ...note,
  );
}

function actionButton(text, path) {
  const button = h("button", { type: "button" }, text);
  button.addEventListener("click", () => control("POST", path));
  return button;
}

function renderClips(board) {
  // withheld clips have a table of their own (renderWithheld), with why
  const out = (board.clips || []).filter(
    (clip) => clip.state && clip.state !== "active" && clip.state !== "withheld",
  );
  if (!out.length) {
    $("clips").replaceChildren(h("p", { class: "note" }, "No clip is retired or withdrawn."));
    return;
  }
  const rows = out.map((clip) =>
    h(
      "tr",
      { "data-clip": clip.id },
      h("td", {}, clip.external_id),
      h("td", {}, clip.state),
      h("td", {}, String(clip.labels)),
      h(
        "td",
        {},
        clip.state === "withdrawn"
          ? actionButton("Retire", `${BASE}/clips/${clip.id}/retire`)
          : "",
        actionButton("Restore", `${BASE}/clips/${clip.id}/restore`),
      ),
    ),
  );
  const head = h("tr", {}, ["clip", "state", "labels", ""].map((text) => h("th", {}, text)));
  $("clips").replaceChildren(
    h("table", { id: "clips-table" }, h("thead", {}, head), h("tbody", {}, rows)),
  );
}

function renderSkipped(data) {
  const tasks = data.tasks || [];
  $("skipped").replaceChildren(
    ...tasks.map((task) =>
      h(
        "p",
        { class: "note" },
        `${task.left.external_id}${task.right ? ` vs ${task.right.external_id}` : " (rating)"}: ` +
          `skipped by ${task.raters} raters, withdrawn`,
      ),
    ),
  );
}

function withheldWhy(clip) {
  if (clip.reason === "threshold") return `safety score ${number(clip.safety)} below the threshold`;
  const who = clip.reports.map(
    (report) =>
      `${report.rater_name || `rater ${report.rater_id}`} at ${new Date(report.at).toLocaleString()}`,
  );
  return `reported by ${who.join(", ")}`;
}

function renderWithheld(data) {
  const threshold =
    data.safety_threshold === null || data.safety_threshold === undefined
      ? "no safety threshold"
      : `a "${data.safety_criterion}" score below ${data.safety_threshold}`;
  const raters = data.report_limit === 1 ? "one rater" : `${data.report_limit} raters`;
  $("withheld-policy").textContent = `Withheld: ${threshold}; reports from ${raters}.`;
  const clips = data.clips || [];
  if (!clips.length) {
    $("withheld").replaceChildren(h("p", { class: "note" }, "No clip is withheld."));
    return;
  }
  const rows = clips.map((clip) =>
    h(
      "tr",
      { "data-clip": clip.clip.id, "data-reason": clip.reason },
      h("td", {}, clip.clip.external_id),
      h("td", {}, clip.reason),
      h("td", {}, withheldWhy(clip)),
      h("td", {}, String(clip.labels)),
      h(
        "td",
        {},
        actionButton("Restore", `${BASE}/clips/${clip.clip.id}/restore`),
        actionButton("Retire", `${BASE}/clips/${clip.clip.id}/retire`),
      ),
    ),
  );
  const head = h("tr", {}, ["clip", "reason", "why", "labels", ""].map((t) => h("th", {}, t)));
  $("withheld").replaceChildren(
    h("table", { id: "withheld-table" }, h("thead", {}, head), h("tbody", {}, rows)),
  );
}

function flagTitle(rater) {
  const random = rater.probability_random;
  return random === null || random === undefined
    ? ""
    : `probability that this rater clicks at random: ${number(random, 3)}`;
}

function renderWeights(data) {
  $("weights-level").textContent = data.level
    ? `(${Math.round(data.level * 100)} % intervals)`
    : "";
  if (!data.criteria || !data.criteria.length) {
    $("weights").replaceChildren(
      h("p", { class: "note" }, "This campaign has no reward-model criteria."),
    );
    return;
  }
  const panels = [{ context: "global", weights: data.global }, ...(data.contexts || [])];
  const all = panels.flatMap((panel) => panel.weights);
  const low = Math.min(0, ...all.map((w) => w.lower));
  const high = Math.max(0, ...all.map((w) => w.upper));
  const figures = panels.map((panel, index) => {
    const rows = panel.weights.map((w) => ({
      label: w.criterion,
      mean: w.mean,
      lower: w.lower,
      upper: w.upper,
      color: PALETTE[index % PALETTE.length],
    }));
    // one x range for every panel, so contexts compare by eye
    const chart = intervalChart(rows, {
      width: 380,
      labelWidth: 150,
      zero: true,
      domain: [low, high],
    });
    return h(
      "figure",
      { "data-context": panel.context },
      h("figcaption", {}, panel.context),
      chart,
    );
  });
  $("weights").replaceChildren(...figures);
}

// ---------------------------------------------------------------- polling

async function refresh() {
  clearTimeout(timer);
  const calls = {
    campaign: api("GET", BASE, KEY),
    leaderboard: api("GET", `${BASE}/leaderboard`, KEY),
    progress: api("GET", `${BASE}/progress`, KEY),
    raters: api("GET", `${BASE}/raters`, KEY),
    weights: api("GET", `${BASE}/weights`, KEY),
    skipped: api("GET", `${BASE}/skipped`, KEY),
    withheld: api("GET", `${BASE}/withheld`, KEY),
  };
  const names = Object.keys(calls);
  const results = await Promise.allSettled(Object.values(calls));
  const failures = [];
  const renderers = {
    campaign: [renderCampaign, "title"],
    leaderboard: [renderLeaderboard, "leaderboard"],
    progress: [
      (data) => {
        renderProgress(data);
        renderStopping(data);
      },
      "progress",
    ],
    raters: [renderRaters, "raters"],
    weights: [renderWeights, "weights"],
    skipped: [renderSkipped, "skipped"],
    withheld: [renderWithheld, "withheld"],
  };
  results.forEach((result, index) => {
    const [render, target] = renderers[names[index]];
    if (result.status === "fulfilled") {
      try {
        render(result.value.data);
      } catch (error) {
        console.error(error);
        panelError(target, error);
      }
    } else {
      failures.push(result.reason);
      if (target !== "title") panelError(target, result.reason);
    }
  });
  const denied = failures.find(
    (e) => e instanceof ApiError && (e.status === 401 || e.status === 403),
  );
  if (denied) {
    fatal("The admin key is missing or wrong: open this page as /dashboard/ID?key=ADMIN_KEY.");
    return;
  }
  const updated = $("updated");
  updated.className = failures.length ? "error" : "";
  updated.textContent = failures.length
    ? `Last refresh had ${failures.length} error(s); retrying every ${POLL_MS / 1000} s`
    : `Updated ${new Date().toLocaleTimeString()}; refreshes every ${POLL_MS / 1000} s`;
  document.body.dataset.refreshed = String(Date.now());
  schedule();
}

function schedule() {
  clearTimeout(timer);
  if (!document.hidden) timer = setTimeout(refresh, POLL_MS);
}

function fatal(text) {
  const box = $("fatal");
  box.textContent = text;
  box.hidden = false;
  $("panels").hidden = true;
}

async function newRater() {
  try {
    const { data } = await api("POST", `${BASE}/raters`, KEY, {});
    const token = encodeURIComponent(data.token);
    const link = `${window.location.origin}/rate/${CAMPAIGN}?token=${token}`;
    $("new-rater-link").replaceChildren(
      `${data.name || `rater ${data.id}`}: `,
      h("a", { href: link, target: "_blank", rel: "noopener" }, link),
    );
    refresh();
  } catch (error) {
    $("new-rater-link").textContent = `Could not create a rater: ${error.message}`;
  }
}

async function control(method, path, body, message = "controls-message") {
  try {
    await api(method, path, KEY, body);
    $(message).textContent = "";
  } catch (error) {
    $(message).textContent = error.detail || error.message;
  }
  refresh();
}

$("retire-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const wanted = $("retire-id").value.trim();
  // asked of the server: the clip may be on any page of the leaderboard
  let clip;
  try {
    const query = new URLSearchParams({ external_id: wanted, limit: "1" });
    clip = (await api("GET", `${BASE}/leaderboard?${query}`, KEY)).data.clips[0];
  } catch (error) {
    $("retire-message").textContent = error.detail || error.message;
    return;
  }
  $("retire-message").textContent = clip ? "" : `no clip ${wanted}`;
  if (clip) control("POST", `${BASE}/clips/${clip.id}/retire`);
});

for (const button of document.querySelectorAll("#controls [data-action]")) {
  button.addEventListener("click", () => control("POST", `${BASE}/${button.dataset.action}`));
}
$("controls").addEventListener("submit", (event) => {
  event.preventDefault();
  const levels = $("levels").value;
  const floor = $("min-labels").value.trim();
  control("PATCH", BASE, {
    lease_seconds: Number($("lease").value),
    emoji_levels: levels === "" ? null : Number(levels),
    ...(floor === "" ? {} : { min_labels: Number(floor) }),
  });
});
$("targets-form").addEventListener("submit", (event) => {
  event.preventDefault();
  // a blank field is no such target; every field blank clears them all (never done)
  const targets = {};
  const fields = {
    kendall_tau: "target-tau",
    confidence: "target-confidence",
    interval_width: "target-width",
  };
  for (const [name, id] of Object.entries(fields)) {
    const text = $(id).value.trim();
    if (text !== "") targets[name] = Number(text);
  }
  const body = { targets: Object.keys(targets).length ? targets : null };
  control("PATCH", BASE, body, "targets-message");
});

document.addEventListener("visibilitychange", () => {
  if (!document.hidden) refresh();
});
$("show-all").addEventListener("click", () => {
  showAll = !showAll;
  if (lastBoard) renderLeaderboard(lastBoard);
});
$("new-rater").addEventListener("click", newRater);

if (KEY) refresh();
else fatal("Open this page with the admin key: /dashboard/ID?key=ADMIN_KEY.");
