// The rating page: shows one task (a pair, one clip for an emoji rating, or a K-set: a grid of
// K clips of one prompt to pick the best of, the best and the worst, or to order), sends the
// answer with when the task was shown (the campaign learns seconds per task kind), and shows
// the next task at once (it was fetched while the rater looked at this one).
//
// No label is lost or doubled:
// - an answer goes into an outbox in localStorage *before* it is sent, and leaves it only when
//   the service acknowledged it (or refused it for good, e.g. an expired lease); sending is
//   retried with exponential backoff, and a reload sends what is still in the outbox;
// - the service is idempotent per assignment (the same answer twice is one label), so
//   re-sending after a lost acknowledgement is safe;
// - a task takes no input for INPUT_GUARD_MS after it appears, and the buttons are disabled
//   on the first click, so a double click (or a key held down) answers once;
// - a new task is asked for only once every earlier answer is acknowledged, so the service
//   knows what this rater has judged (and never offers that pair again) when it chooses.
//
// "Unsafe or broken" (button or X) reports a clip of the task instead of answering it: the
// report goes through the same outbox, the service withholds the clip by the campaign's policy
// and withdraws the task, and the page moves on, never showing that clip again itself.
import { ApiError, api, campaignId, h, isVideo, takeCredential } from "./common.js";

const CAMPAIGN = campaignId();
const TOKEN = takeCredential("token", `ratingparty:token:${CAMPAIGN}`);
const TAG = `${CAMPAIGN}:${fingerprint(TOKEN || "")}`;
const OUTBOX_KEY = `ratingparty:outbox:${TAG}`; // localStorage: survives closing the tab
const SESSION_KEY = `ratingparty:session:${TAG}`; // sessionStorage: this tab's session
const INPUT_GUARD_MS = 350; // longer than a double click's gap: its second click is ignored
const EXPIRY_MARGIN_MS = 5000; // a task this close to its lease's end is replaced, not shown
const FIRST_BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 15000;
// worst to best; all from Unicode 6.0's emoticons block, which even minimal fonts cover
const EMOJI = ["😫", "😞", "😐", "😊", "😍"];
const REPORTED = "Thank you: the clip was reported and will not be shown to you again.";
const EMOJI_WIDE = ["😡", "😫", "😞", "😐", "😊", "😀", "😍"];

const $ = (id) => document.getElementById(id);

const state = {
  current: null, // {assignment, receivedAt}
  view: null, // the current task's view
  next: undefined, // prefetched {assignment, message, receivedAt}; undefined = not fetched
  nextPromise: null,
  nextView: null,
  shownAt: 0,
  locked: true,
  done: false,
  count: 0, // labels given in this session (sent or waiting in the outbox)
  outbox: [],
  flushing: false,
  wakers: new Set(), // resolve the backoff waits early (on "online" or a new answer)
  sentWaiters: [], // resolved when the outbox is empty
  expiryTimer: null,
  reporting: false, // choosing which clip of a pair to report
  picked: [], // a K-set's clips picked so far (ids): best first; for best-and-worst, then worst
  reported: new Set(), // clip ids this rater reported in this session
};

/** FNV-1a hash, so storage keys tell raters apart without holding their token. */
function fingerprint(text) {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i += 1) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash.toString(16);
}

// ---------------------------------------------------------------- persistence

function loadJson(storage, key, fallback) {
  try {
    const text = storage.getItem(key);
    return text ? JSON.parse(text) : fallback;
  } catch {
    return fallback;
  }
}

function saveOutbox() {
  localStorage.setItem(OUTBOX_KEY, JSON.stringify(state.outbox));
}

function saveSession() {
  const next = state.next && state.next.assignment ? state.next : null;
  sessionStorage.setItem(
    SESSION_KEY,
    JSON.stringify({
      count: state.count,
      current: state.current,
      next,
      reported: [...state.reported],
    }),
  );
}

// ---------------------------------------------------------------- tasks

function leaseEnd(record) {
  return record.receivedAt + record.assignment.lease_seconds * 1000;
}

function usable(record) {
  if (!record || !record.assignment) return false;
  const answered = state.outbox.some((entry) => entry.assignment_id === record.assignment.id);
  const { left, right } = record.assignment;
  // a task prefetched before a report may show the reported clip (the service withdrew it)
  const shows = state.reported.has(left.id) || (right && state.reported.has(right.id));
  return !answered && !shows && leaseEnd(record) - Date.now() > EXPIRY_MARGIN_MS;
}

function sleep(ms) {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      state.wakers.delete(done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    state.wakers.add(done);
  });
}

/** Resolves once the outbox is empty (at once if it is). */
function whenSent() {
  if (!state.outbox.length) return Promise.resolve();
  return new Promise((resolve) => state.sentWaiters.push(resolve));
}

function wakeAll() {
  for (const wake of [...state.wakers]) wake();
}

/** Ask the service for a task, retrying network and server errors; null assignment = none left. */
async function requestTask() {
  let backoff = FIRST_BACKOFF_MS;
  for (;;) {
    try {
      const { data } = await api("POST", `/v1/campaigns/${CAMPAIGN}/assignments`, TOKEN);
      // the thanks for a report stays until the next answer
      if (!state.outbox.length && $("status").textContent !== REPORTED) setStatus("");
      return { assignment: data.assignment, message: data.message, receivedAt: Date.now() };
    } catch (error) {
      if (!retryable(error)) throw error;
      setStatus("Connection lost; retrying…", "offline");
      await sleep(backoff);
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
    }
  }
}

function retryable(error) {
  const status = error instanceof ApiError ? error.status : 0;
  return status === 0 || status === 408 || status === 429 || status >= 500;
}

/** Fetch the next task in the background and build its view off screen. */
function prefetch() {
  if (state.nextPromise || state.next !== undefined || state.done) return;
  state.nextPromise = whenSent()
    .then(requestTask)
    .then((record) => {
      state.next = record;
      if (record.assignment) {
        state.nextView = buildView(record.assignment);
        saveSession();
      }
    })
    .catch(fail)
    .finally(() => {
      state.nextPromise = null;
    });
}

/** The task to show next: the prefetched one if still good, else a fresh one. */
async function takeNext() {
  if (state.nextPromise) await state.nextPromise;
  let record = state.next;
  let view = state.nextView;
  state.next = undefined;
  state.nextView = null;
  // a prefetched "nothing left" was asked while the current task was still pending: ask again
  if (!usable(record)) {
    if (view) view.dispose();
    await whenSent();
    record = await requestTask();
    view = record.assignment ? buildView(record.assignment) : null;
  }
  return { record, view };
}

async function advance() {
  const { record, view } = await takeNext();
  if (!record.assignment) {
    showDone(record.message);
    return;
  }
  show(record, view);
  prefetch();
}

function show(record, view) {
  if (state.view) state.view.dispose();
  state.current = record;
  state.view = view;
  state.done = false;
  $("done").hidden = true;
  $("stage").hidden = false;
  const views = $("views");
  views.replaceChildren(view.element);
  view.element.hidden = false;
  view.start();
  renderControls(record.assignment);
  $("stage").dataset.assignment = String(record.assignment.id);
  $("stage").setAttribute("aria-busy", "false");
  state.shownAt = performance.now();
  state.locked = false;
  const stage = $("stage");
  stage.dataset.ready = "false";
  // tells tests (and styles) when input is taken: after the double-click guard
  setTimeout(() => {
    if (state.current === record) stage.dataset.ready = "true";
  }, INPUT_GUARD_MS);
  saveSession();
  clearTimeout(state.expiryTimer);
  // a task left unanswered until its lease ends is swapped for a fresh one
  state.expiryTimer = setTimeout(
    () => {
      if (state.current === record && !state.locked) {
        state.locked = true;
        setStatus("That task timed out; here is a fresh one.");
        advance().catch(fail);
      }
    },
    Math.max(0, leaseEnd(record) - Date.now() - EXPIRY_MARGIN_MS),
  );
}

function showDone(message) {
  state.done = true;
  state.current = null;
  if (state.view) state.view.dispose();
  state.view = null;
  saveSession();
  $("stage").hidden = true;
  $("stage").dataset.assignment = "";
  $("done").hidden = false;
  $("done-message").textContent = message || "Every task of this campaign is done for now.";
  $("done-count").textContent = `You gave ${labelText(state.count)} in this session. Thank you!`;
}

// ---------------------------------------------------------------- views

function mediaElement(clip, label) {
  if (isVideo(clip.uri)) {
    const video = h("video", {
      src: clip.uri,
      loop: true,
      muted: true,
      playsinline: true,
      preload: "auto",
      "aria-label": label,
    });
    video.muted = true; // the attribute alone does not mute in every browser
    return video;
  }
  return h("img", { src: clip.uri, alt: label, draggable: "false", decoding: "async" });
}

/** Start videos together and keep them together: the left one leads, the right follows. */
function syncVideos(videos) {
  if (!videos.length) return () => {};
  let stopped = false;
  const start = () => {
    if (stopped) return;
    for (const video of videos) video.currentTime = 0;
    for (const video of videos) video.play().catch(() => {});
  };
  Promise.all(
    videos.map(
      (video) =>
        new Promise((resolve) => {
          if (video.readyState >= 3) resolve();
          else {
            video.addEventListener("canplay", resolve, { once: true });
            video.addEventListener("error", resolve, { once: true });
          }
        }),
    ),
  ).then(start);
  const [leader, ...followers] = videos;
  let last = 0;
  const onTime = () => {
    const wrapped = leader.currentTime < last; // the leader looped
    last = leader.currentTime;
    for (const follower of followers) {
      const drift = Math.abs(follower.currentTime - leader.currentTime);
      if (wrapped || drift > 0.12) follower.currentTime = leader.currentTime;
      if (follower.paused && !leader.paused) follower.play().catch(() => {});
    }
  };
  leader.addEventListener("timeupdate", onTime);
  return () => {
    stopped = true;
    leader.removeEventListener("timeupdate", onTime);
    for (const video of videos) {
      video.pause();
      video.removeAttribute("src");
      video.load();
    }
  };
}

/** Build a task's DOM (hidden, so its media load while the rater looks at the current task). */
function buildView(assignment) {
  if (assignment.kind === "kset") return buildGrid(assignment);
  const sides = twoClips(assignment) ? ["left", "right"] : ["single"];
  const clips =
    twoClips(assignment) ? [assignment.left, assignment.right] : [assignment.left];
  const figures = sides.map((side, index) => {
    const label = side === "single" ? "The clip" : `${side === "left" ? "Left" : "Right"} clip`;
    const figure = h(
      "figure",
      { class: "clip", "data-side": side },
      mediaElement(clips[index], label),
      side === "single" ? null : h("figcaption", {}, side === "left" ? "Left" : "Right"),
    );
    figure.addEventListener("click", () => {
      if (state.reporting) report(side);
      else if (side !== "single") answer({ choice: side }, side);
    });
    return figure;
  });
  const layout = twoClips(assignment) ? "pair" : assignment.kind;
  const element = h("div", { class: `task ${layout}`, hidden: true }, figures);
  let stop = () => {};
  return {
    element,
    start() {
      stop = syncVideos([...element.querySelectorAll("video")]);
    },
    dispose() {
      stop();
      element.remove();
    },
  };
}

/** A K-set's grid: its clips in the order shown, numbered 1..K (the keys that pick them). */
function buildGrid(assignment) {
  const figures = assignment.clips.map((clip, index) => {
    const figure = h(
      "figure",
      { class: "clip", "data-side": `clip-${index}`, "data-clip": String(clip.id) },
      mediaElement(clip, `Clip ${index + 1}`),
      h("figcaption", {}, h("span", { class: "number" }, String(index + 1)), h("span", { class: "mark" })),
    );
    figure.addEventListener("click", () => {
      if (state.reporting) report(`clip-${index}`);
      else pick(index);
    });
    return figure;
  });
  const element = h(
    "div",
    { class: "task kset", hidden: true, "data-size": String(figures.length) },
    figures,
  );
  let stop = () => {};
  return {
    element,
    start() {
      stop = syncVideos([...element.querySelectorAll("video")]);
    },
    dispose() {
      stop();
      element.remove();
    },
  };
}

const KSET_QUESTIONS = {
  best: "Which one is best?",
  best_worst: "Which one is best, and which worst?",
  rank: "Order them, best first",
};

/** How many clips a K-set's answer names (the last of an order is implied). */
function picksNeeded(assignment) {
  const size = assignment.clips.length;
  return { best: 1, best_worst: 2, rank: size - 1 }[assignment.mode] || 1;
}

/** Pick clip `index` of the current K-set: the next place in the answer; sent once complete. */
function pick(index) {
  if (state.locked || !state.current) return;
  if (performance.now() - state.shownAt < INPUT_GUARD_MS) return;
  const assignment = state.current.assignment;
  if (assignment.kind !== "kset") return;
  const clip = assignment.clips[index];
  if (!clip || state.picked.includes(clip.id)) return;
  state.picked.push(clip.id);
  if (state.picked.length < picksNeeded(assignment)) {
    renderPicks(assignment);
    return;
  }
  const ranking = [...state.picked];
  if (assignment.mode === "rank") {
    ranking.push(assignment.clips.find((c) => !ranking.includes(c.id)).id);
  }
  renderPicks(assignment, ranking);
  answer({ ranking }, `clip-${index}`);
}

/** Undo the last pick of the current K-set. */
function unpick() {
  if (state.locked || !state.current || !state.picked.length) return;
  state.picked.pop();
  renderPicks(state.current.assignment);
}

/** Mark the picked clips (1st, 2nd, ... or best / worst) and say what to pick next. */
function renderPicks(assignment, ranking = state.picked) {
  const figures = state.view ? state.view.element.querySelectorAll("figure") : [];
  for (const figure of figures) {
    const place = ranking.indexOf(Number(figure.dataset.clip));
    let mark = "";
    if (place >= 0) {
      if (assignment.mode === "rank") mark = `#${place + 1}`;
      else mark = place === 0 ? "best" : "worst";
    }
    figure.dataset.place = mark;
    figure.querySelector(".mark").textContent = mark;
  }
  const size = assignment.clips.length;
  const next = {
    best: "Click the best clip or press its number.",
    best_worst:
      state.picked.length === 0
        ? "Click the best clip or press its number, then the worst."
        : "Now click the worst clip or press its number.",
    rank: `Click the clips from best to worst or press their numbers (${state.picked.length} of ${size - 1} picked; the last is implied).`,
  }[assignment.mode];
  $("hint").textContent = `${next} Backspace undoes a pick; S skips; X reports a clip as unsafe or broken.`;
  const undo = $("buttons").querySelector('button[data-choice="undo"]');
  if (undo) undo.disabled = state.picked.length === 0;
}

function emojiFor(levels) {
  if (levels === EMOJI.length) return EMOJI;
  if (levels <= EMOJI_WIDE.length) {
    // spread the levels over the wide scale, worst to best
    return Array.from({ length: levels }, (_, k) =>
      levels === 1 ? EMOJI_WIDE[3] : EMOJI_WIDE[Math.round((k * 6) / (levels - 1))],
    );
  }
  return Array.from({ length: levels }, (_, k) => String(k + 1));
}

function keycap(text) {
  return h("kbd", {}, text);
}

/** A pair, or a criterion question about a pair: two clips side by side. */
function twoClips(assignment) {
  return assignment.kind === "pair" || assignment.kind === "criterion";
}

function renderControls(assignment) {
  state.reporting = false;
  $("stage").dataset.reporting = "false";
  const buttons = [];
  const choices = assignment.choices || [];
  const prompt = assignment.left.group ? `Prompt: ${assignment.left.group}` : "";
  $("prompt").textContent = prompt;
  state.picked = [];
  if (assignment.kind === "kset") {
    $("question").textContent = KSET_QUESTIONS[assignment.mode] || KSET_QUESTIONS.best;
    const undo = h(
      "button",
      {
        type: "button",
        "data-choice": "undo",
        onclick: (event) => {
          event.currentTarget.blur();
          unpick();
        },
      },
      "Undo",
      keycap("⌫"),
    );
    buttons.push(undo);
    $("buttons").replaceChildren(...buttons);
    renderPicks(assignment);
  } else if (twoClips(assignment)) {
    // a criterion question ("which is better aligned?") says itself which one
    $("question").textContent = assignment.question || "Which one is better?";
    buttons.push(button("left", "Left", ["←", "1"], { choice: "left" }));
    if (choices.includes("tie")) buttons.push(button("tie", "Tie", ["↓", "3"], { choice: "tie" }));
    buttons.push(button("right", "Right", ["→", "2"], { choice: "right" }));
    buttons.push(...bothButtons(choices));
    const tie = choices.includes("tie") ? ", ↓ or 3 or T for a tie" : "";
    const both = choices.includes("both_good")
      ? ", G or 4 if both are good, B or 5 if both are bad"
      : "";
    $("hint").textContent =
      `Click a clip or press ← / 1 for left, → / 2 for right${tie}${both}; X reports a clip ` +
      "as unsafe or broken.";
  } else {
    $("question").textContent = "How good is this one?";
    const levels = assignment.emoji_levels || 5;
    emojiFor(levels).forEach((emoji, level) => {
      const item = button(`level-${level}`, emoji, [String(level + 1)], { level });
      item.classList.add("emoji");
      item.dataset.level = String(level);
      item.title = `level ${level + 1} of ${levels}`;
      buttons.push(item);
    });
    $("hint").textContent =
      `Press 1 (worst) to ${levels} (best); X reports the clip as unsafe or broken.`;
  }
  if (choices.includes("skip")) {
    const skip = button("skip", "Skip", ["S"], { choice: "skip" });
    skip.classList.add("skip");
    buttons.push(skip);
  }
  buttons.push(reportButton());
  $("buttons").replaceChildren(...buttons);
}

/** "Both good" and "Both bad": ties that also say where the pair stands, offered only where
 * the assignment's choices list them (the campaign sets a both_threshold). */
function bothButtons(choices) {
  const items = [];
  if (choices.includes("both_good")) {
    items.push(button("both_good", "Both good", ["G", "4"], { choice: "both_good" }));
  }
  if (choices.includes("both_bad")) {
    items.push(button("both_bad", "Both bad", ["B", "5"], { choice: "both_bad" }));
  }
  for (const item of items) item.classList.add("both");
  return items;
}

function reportButton() {
  const item = h(
    "button",
    {
      type: "button",
      class: "report",
      "data-choice": "report",
      title: "Report a clip that is unsafe or does not play",
      onclick: (event) => {
        event.currentTarget.blur();
        startReport();
      },
    },
    "Unsafe or broken",
    keycap("X"),
  );
  return item;
}

/** A rating task's one clip is reported at once; for a pair, ask which clip. */
function startReport() {
  if (state.locked || !state.current) return;
  if (performance.now() - state.shownAt < INPUT_GUARD_MS) return;
  const assignment = state.current.assignment;
  if (assignment.kind === "rating") {
    report("single");
    return;
  }
  state.reporting = true;
  $("stage").dataset.reporting = "true";
  $("question").textContent = "Which clip is unsafe or broken?";
  const pick = (side, text, keys) =>
    h(
      "button",
      {
        type: "button",
        "data-choice": `report-${side}`,
        onclick: (event) => {
          event.currentTarget.blur();
          report(side);
        },
      },
      text,
      keys.map(keycap),
    );
  const cancel = h(
    "button",
    {
      type: "button",
      "data-choice": "report-cancel",
      onclick: (event) => {
        event.currentTarget.blur();
        renderControls(assignment);
      },
    },
    "Cancel",
    keycap("Esc"),
  );
  if (assignment.kind === "kset") {
    $("buttons").replaceChildren(
      ...assignment.clips.map((_, k) => pick(`clip-${k}`, `Clip ${k + 1}`, [String(k + 1)])),
      cancel,
    );
    $("hint").textContent = "Click the clip or press its number; Esc goes back.";
    return;
  }
  $("buttons").replaceChildren(
    pick("left", "Left clip", ["←", "1"]),
    pick("right", "Right clip", ["→", "2"]),
    cancel,
  );
  $("hint").textContent = "Click the clip or press ← / 1 or → / 2; Esc goes back.";
}

/** Report the clip on `side` ("left", "right", "single", or "clip-k": a K-set's k-th):
 * queued like an answer. */
function report(side) {
  if (state.locked || !state.current) return;
  const assignment = state.current.assignment;
  const inGrid = side.startsWith("clip-") ? assignment.clips[Number(side.slice(5))] : null;
  const clip = inGrid || (side === "right" ? assignment.right : assignment.left);
  if (!clip) return;
  state.locked = true;
  state.reporting = false;
  $("stage").dataset.ready = "false";
  clearTimeout(state.expiryTimer);
  for (const item of $("buttons").querySelectorAll("button")) item.disabled = true;
  state.reported.add(clip.id);
  state.outbox.push({
    assignment_id: assignment.id,
    report: true,
    body: { clip_id: clip.id },
    at: Date.now(),
  });
  saveOutbox();
  state.current = null;
  saveSession();
  setStatus(REPORTED);
  flush();
  advance().catch(fail);
}

function button(name, text, keys, body) {
  return h(
    "button",
    {
      type: "button",
      "data-choice": name,
      onclick: (event) => {
        event.currentTarget.blur(); // so Space/Enter do not re-press it
        answer(body, name);
      },
    },
    text,
    keys.map(keycap),
  );
}

// ---------------------------------------------------------------- answering

function answer(body, name) {
  if (state.locked || !state.current) return;
  if (performance.now() - state.shownAt < INPUT_GUARD_MS) return;
  const assignment = state.current.assignment;
  if (body.choice && !(assignment.choices || []).includes(body.choice)) return;
  state.locked = true;
  $("stage").dataset.ready = "false";
  clearTimeout(state.expiryTimer);
  for (const item of $("buttons").querySelectorAll("button")) {
    item.disabled = true;
    if (item.dataset.choice === name) item.classList.add("chosen");
  }
  const figure = state.view.element.querySelector(`figure[data-side="${name}"]`);
  if (figure) figure.classList.add("chosen");
  if ($("status").textContent === REPORTED) setStatus("");
  // when the task was shown and answered, by this page's clock: the campaign learns seconds
  // per task kind from the difference (a clock that is off shifts both alike)
  const now = Date.now();
  const timed = {
    ...body,
    shown_at: new Date(now - (performance.now() - state.shownAt)).toISOString(),
    answered_at: new Date(now).toISOString(),
  };
  state.outbox.push({ assignment_id: assignment.id, body: timed, at: now });
  saveOutbox();
  state.count += 1;
  state.current = null;
  saveSession();
  renderProgress();
  flush();
  advance().catch(fail);
}

/** Send the outbox in order; retry what failed in transit; drop what the service refused. */
async function flush() {
  if (state.flushing) {
    wakeAll();
    return;
  }
  state.flushing = true;
  let backoff = FIRST_BACKOFF_MS;
  let reportedNow = false;
  try {
    while (state.outbox.length) {
      const entry = state.outbox[0];
      try {
        const call = entry.report ? "report" : "judgment";
        await api("POST", `/v1/assignments/${entry.assignment_id}/${call}`, TOKEN, entry.body);
        reportedNow = reportedNow || Boolean(entry.report);
        state.outbox.shift();
        saveOutbox();
        backoff = FIRST_BACKOFF_MS;
      } catch (error) {
        if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
          throw error;
        }
        if (retryable(error)) {
          const waiting = labelText(state.outbox.length).replace("label", "answer");
          setStatus(`Offline: ${waiting} waiting, retrying…`, "offline");
          await sleep(backoff);
          backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
          continue;
        }
        // refused for good (an expired lease, or an assignment answered otherwise): not a label
        state.outbox.shift();
        saveOutbox();
        if (!entry.report) state.count = Math.max(0, state.count - 1);
        saveSession();
        const what = entry.report ? "A report" : "An answer";
        setStatus(`${what} was not recorded (${error.detail || error.status}).`, "error");
        renderProgress();
      }
    }
    const thanks = reportedNow || $("status").textContent === REPORTED;
    setStatus(state.done ? "All answers sent." : thanks ? REPORTED : "");
    for (const resolve of state.sentWaiters.splice(0)) resolve();
  } catch (error) {
    fail(error);
  } finally {
    state.flushing = false;
    renderProgress();
  }
}

function labelText(count) {
  return `${count} label${count === 1 ? "" : "s"}`;
}

function renderProgress() {
  const progress = $("progress");
  const waiting = state.outbox.length ? ` (${state.outbox.length} sending)` : "";
  progress.textContent = `${labelText(state.count)} this session${waiting}`;
  progress.dataset.count = String(state.count);
  progress.dataset.pending = String(state.outbox.length);
  if (state.done) {
    $("done-count").textContent = `You gave ${labelText(state.count)} in this session. Thank you!`;
  }
}

function setStatus(text, kind = "") {
  const status = $("status");
  status.textContent = text;
  status.className = kind;
}

function fail(error) {
  console.error(error);
  const status = error instanceof ApiError ? error.status : 0;
  const text =
    status === 401 || status === 403
      ? "This rating link is not valid (or no longer valid). Ask the organiser for a new one."
      : status === 404
        ? "This campaign does not exist."
        : `Something went wrong: ${error.message || error}`;
  const fatal = $("fatal");
  fatal.textContent = text;
  fatal.hidden = false;
  $("stage").hidden = true;
  state.locked = true;
}

// ---------------------------------------------------------------- keys

function keyToAnswer(event, assignment) {
  const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
  const number = Number.parseInt(key, 10);
  if (state.reporting) {
    if (key === "Escape") return () => renderControls(assignment);
    if (assignment.kind === "kset") {
      if (number >= 1 && number <= assignment.clips.length) return () => report(`clip-${number - 1}`);
      return null;
    }
    if (key === "ArrowLeft" || key === "1") return () => report("left");
    if (key === "ArrowRight" || key === "2") return () => report("right");
    return null;
  }
  if (key === "x") return () => startReport();
  if (key === " " || key === "s") return [{ choice: "skip" }, "skip"];
  if (assignment.kind === "kset") {
    if (number >= 1 && number <= assignment.clips.length) return () => pick(number - 1);
    if (key === "Backspace" || key === "u") return () => unpick();
    return null;
  }
  if (twoClips(assignment)) {
    if (key === "ArrowLeft" || key === "1") return [{ choice: "left" }, "left"];
    if (key === "ArrowRight" || key === "2") return [{ choice: "right" }, "right"];
    if (key === "ArrowDown" || key === "3" || key === "t") return [{ choice: "tie" }, "tie"];
    // answer() drops a choice the assignment does not list, so these keys do nothing elsewhere
    if (key === "4" || key === "g") return [{ choice: "both_good" }, "both_good"];
    if (key === "5" || key === "b") return [{ choice: "both_bad" }, "both_bad"];
    return null;
  }
  const level = Number.parseInt(key, 10);
  const levels = assignment.emoji_levels || 5;
  if (level >= 1 && level <= levels) return [{ level: level - 1 }, `level-${level - 1}`];
  return null;
}

document.addEventListener("keydown", (event) => {
  if (event.repeat || event.altKey || event.ctrlKey || event.metaKey) return;
  if (!state.current) return;
  const found = keyToAnswer(event, state.current.assignment);
  if (!found) return;
  event.preventDefault();
  if (typeof found === "function") found();
  else answer(...found);
});

// ---------------------------------------------------------------- start

window.addEventListener("online", wakeAll);

$("again").addEventListener("click", () => {
  $("done").hidden = true;
  state.next = undefined;
  advance().catch(fail);
});

function start() {
  if (!TOKEN) {
    fail(new ApiError(401, "no token"));
    $("fatal").textContent = "Open this page with your rating link (it ends in ?token=…).";
    return;
  }
  state.outbox = loadJson(localStorage, OUTBOX_KEY, []);
  const saved = loadJson(sessionStorage, SESSION_KEY, {});
  state.count = saved.count || 0;
  state.reported = new Set(saved.reported || []);
  renderProgress();
  if (state.outbox.length) flush(); // answers a reload or a lost connection left unsent
  // after a reload, keep showing the task whose lease this rater still holds
  if (usable(saved.next)) {
    state.next = saved.next;
    state.nextView = buildView(saved.next.assignment);
  }
  if (usable(saved.current)) {
    show(saved.current, buildView(saved.current.assignment));
    prefetch();
  } else {
    advance().catch(fail);
  }
}

start();
