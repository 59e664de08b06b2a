"""Replay and snapshots: how a campaign's engine is rebuilt from the database.

The judgments table is the truth: labels carry `seq` (commit order) and, once applied, `batch`
(the engine call they were applied in); clip batches carry `after_seq` (the labels applied
before them). `steps` turns the log into clip batches and label batches in exactly that
interleaved, batched order, so a replay reaches the posterior the service had (float64, CPU).
A snapshot (api/snapshots.py) holds the engine state after its last label batch and clip
batch; a load that takes it replays only the steps after them. A prior refit the service
adopted (api/refits.py) is a row too, with where its copy was made and where it was adopted:
the replay adopts it at the same place (`Campaign.adopt_refit_at`), so the posterior after a
restart is the served one whether or not a snapshot holds the refit.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, Protocol

from sqlalchemy import Engine

from api import snapshots, store
from api.engine_host import AdoptedRefit, ClipBatch, EngineHost
from api.metrics import Metrics
from api.store import (
    CampaignLog,
    CampaignRecord,
    ClipRecord,
    JudgmentRecord,
    RefitRecord,
    SnapshotRecord,
)
from engine import Judgment, Outcome
from engine.history import Refit
from engine.questions import BOTH_ANSWERS, NO_SECOND, Criterion, KSet, question_of
from engine.state import PriorScales

log = logging.getLogger("ratingparty.api")
Step = ClipBatch | list[Judgment] | AdoptedRefit


class ClipLike(Protocol):
    """A clip as a batch for the engine needs it (a stored clip or a new one)."""

    @property
    def scores(self) -> tuple[float | None, ...]: ...

    @property
    def context(self) -> str | None: ...

    @property
    def group(self) -> str | None: ...

    @property
    def features(self) -> tuple[float, ...] | None: ...


def read(
    db: Engine, campaign_id: int, with_snapshot: bool
) -> tuple[CampaignLog, SnapshotRecord | None]:
    """The campaign's log and (`with_snapshot`) its latest snapshot."""
    snapshot = store.latest_snapshot(db, campaign_id) if with_snapshot else None
    return store.load_log(db, campaign_id), snapshot


async def take_snapshot(
    engine: EngineHost, record: CampaignRecord, snapshot: SnapshotRecord | None, metrics: Metrics
) -> tuple[int, int] | None:
    """Give the engine the snapshot's state when it fits; (its last label batch, its last
    clip batch) then, None when the whole log must be replayed."""
    if snapshot is None:
        return None
    why = None
    if snapshot.format != snapshots.snapshot_format():
        why = f"it was written as {snapshot.format!r}, this is {snapshots.snapshot_format()!r}"
    elif snapshot.config != snapshots.config_digest(record.engine_config):
        why = "the campaign's engine settings changed since"
    else:
        why = await engine.call("restore", snapshot.data)
    if why is not None:
        log.warning(
            "campaign %s: its snapshot is not used (%s); replaying the whole log", record.id, why
        )
        metrics.snapshots.labels("refused").inc()
        return None
    metrics.snapshots.labels("loaded").inc()
    return snapshot.label_batch, snapshot.clip_batch


def snapshot_record(
    record: CampaignRecord, labels: int, label_batch: int, clip_batch: int, data: bytes
) -> SnapshotRecord:
    """The row of a snapshot taken after `label_batch` and `clip_batch` (`labels` labels)."""
    return SnapshotRecord(
        snapshots.snapshot_format(),
        snapshots.config_digest(record.engine_config),
        labels,
        label_batch,
        clip_batch,
        data,
    )


def refit_json(refit: Refit) -> str:
    """A refit's values as the refit row stores them (JSON: floats round-trip exactly)."""
    return json.dumps(asdict(refit))


def refit_of_json(text: str) -> Refit:
    """The refit a row's `refit_json` stored.

    Raises:
        ValueError: the text is not a refit's values.
    """
    try:
        values: dict[str, Any] = json.loads(text)
        scales = values.pop("scales")
        if scales.get("weight_mean") is not None:
            scales["weight_mean"] = tuple(scales["weight_mean"])
        for name in ("emoji_thresholds", "keep_prior"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        return Refit(scales=PriorScales(**scales), **values)
    except (TypeError, KeyError, AttributeError, json.JSONDecodeError) as error:
        raise ValueError(f"a refit row does not hold a refit's values: {error}") from error


def refit_record(
    record: CampaignRecord, adopted: AdoptedRefit, label_batch: int, clip_batch: int
) -> RefitRecord:
    """The row of a refit the engine adopts after `label_batch` and `clip_batch`."""
    return RefitRecord(
        snapshots.config_digest(record.engine_config),
        adopted.ordinal,
        adopted.copy_entries,
        label_batch,
        clip_batch,
        refit_json(adopted.refit),
    )


def label_batches(
    logged: CampaignLog, max_apply_batch: int, after: int = 0
) -> list[list[JudgmentRecord]]:
    """The labels after label batch `after` in the batches they were applied in, in order:
    by their batch marks, and those applied before their mark was written (their owner died)
    `max_apply_batch` at a time, as the load that replays them applies them (and then marks
    them: `unmarked`)."""
    # a snapshot is written after its batches' marks (the writer commits in order), and a
    # load marks the labels it found unmarked: a label without a mark, or with a later one,
    # came after the snapshot
    labels = sorted(
        (j for j in logged.judgments if j.seq is not None and (j.batch is None or j.batch > after)),
        key=lambda j: j.seq or 0,
    )
    batches: list[list[JudgmentRecord]] = []
    for judgment in labels:
        recorded = (
            judgment.batch is not None and batches and batches[-1][-1].batch == judgment.batch
        )
        unbatched_run = (
            judgment.batch is None
            and batches
            and batches[-1][-1].batch is None
            and len(batches[-1]) < max_apply_batch
        )
        if recorded or unbatched_run:
            batches[-1].append(judgment)
        else:
            batches.append([judgment])
    return batches


def unmarked(batches: list[list[JudgmentRecord]]) -> list[list[int]]:
    """The seqs of each of `label_batches`' batches whose labels have no batch mark."""
    return [[j.seq or 0 for j in batch] for batch in batches if batch[0].batch is None]


def steps(
    logged: CampaignLog,
    batches: list[list[JudgmentRecord]],
    has_criteria: bool,
    after: tuple[int, int] | None = None,
    config: str | None = None,
) -> list[Step]:
    """Clip batches, the label batches `batches` (`label_batches` after the same label
    batch) and (those found under the engine settings digested as `config`) adopted refits,
    in the order they were applied; with `after` (a snapshot's last label batch and clip
    batch), only the clip batches that came after it, and every refit (the engine passes
    over those the snapshot holds)."""
    last_labels, last_clips = after or (0, 0)
    clip_batches: dict[int, list[ClipRecord]] = {}
    for clip in logged.clips:
        if clip.batch > last_clips:
            clip_batches.setdefault(clip.batch, []).append(clip)
    pending_clips = deque(sorted(clip_batches.values(), key=lambda b: (b[0].after_seq, b[0].batch)))
    refits = deque(r for r in logged.refits if r.config == config)
    out: list[Step] = []

    def refits_before(label_batch: float, clip_batch: float) -> None:
        # a refit adopted after label batch L and clip batch C came before any later batch
        while refits and (refits[0].label_batch < label_batch or refits[0].clip_batch < clip_batch):
            out.append(adopted_refit(refits.popleft()))

    mark = last_labels  # the latest batch mark before
    for batch in batches:
        while pending_clips and pending_clips[0][0].after_seq < (batch[0].seq or 0):
            refits_before(0, pending_clips[0][0].batch)
            out.append(clip_batch(pending_clips.popleft(), has_criteria))
        if batch[0].batch is None:
            # labels whose mark was never written (their owner died) came right after the
            # marked batch before them, and after a refit recorded there: a refit's row is
            # committed after the marks of every label applied before it
            refits_before(mark + 0.5, 0)
        else:
            mark = batch[0].batch
            refits_before(mark, 0)
        out.append([engine_judgment(j) for j in batch])
    for batch in pending_clips:
        refits_before(0, batch[0].batch)
        out.append(clip_batch(batch, has_criteria))
    out.extend(adopted_refit(r) for r in refits)
    return out


def adopted_refit(row: RefitRecord) -> AdoptedRefit:
    """A refit row as the engine's replay adopts it (its `refit` None where the row does not
    hold a refit's values: the replay leaves it out)."""
    try:
        refit: Refit | None = refit_of_json(row.refit)
    except ValueError:
        refit = None
    return AdoptedRefit(row.ordinal, row.copy_entries, refit)


def clip_batch(batch: Sequence[ClipLike], has_criteria: bool) -> ClipBatch:
    """A clip batch as the engine takes it (no scores when the campaign has no criteria;
    feature vectors where its clips carry them)."""
    gated = bool(batch) and batch[0].features is not None
    return ClipBatch(
        [list(c.scores) for c in batch] if has_criteria else None,
        [c.context for c in batch],
        [c.group for c in batch],
        [list(c.features or ()) for c in batch] if gated else None,
    )


def engine_judgment(record: JudgmentRecord) -> Judgment:
    """A stored label as the engine's `Judgment` (with the time it took, when the page sent
    it: the campaign's clock of seconds per task kind learns from it)."""
    if record.items is not None and record.ranking is not None:
        # a K-set: the engine's question is its clips by position, whatever the layout
        kset = KSet(tuple(sorted(record.items)), record.kset_mode or "best")
        return Judgment(record.rater_id, kset, record.ranking, seconds=record.seconds)
    gold = None if record.gold is None else Outcome(record.gold)
    if record.criterion is not None:
        criterion = Criterion(record.first, record.second, record.criterion)
        return Judgment(
            record.rater_id, criterion, Outcome(record.outcome), gold=gold, seconds=record.seconds
        )
    question = question_of(record.first, record.second)
    answer = record.level if record.second == NO_SECOND else stored_answer(record.outcome)
    return Judgment(
        record.rater_id, question, answer, left=record.left, gold=gold, seconds=record.seconds
    )


def stored_answer(outcome: str | None) -> Outcome | str:
    """A pair label's stored `outcome` as the engine's answer: an `Outcome`, or "both_good" /
    "both_bad" as they are."""
    if outcome in BOTH_ANSWERS:
        return outcome
    return Outcome(outcome)


__all__ = [
    "clip_batch",
    "engine_judgment",
    "read",
    "snapshot_record",
    "steps",
    "stored_answer",
    "take_snapshot",
]
