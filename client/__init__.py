"""A Python client for the ratingparty service (httpx; blocking and asyncio).

    from client import Client

    with Client("http://127.0.0.1:8000", key=ADMIN_KEY) as service:
        campaign = service.create_campaign("party", criteria=["alignment"])
        service.stream_clips(campaign.id, clips)            # any iterable, in batches
        ann = service.for_rater(service.register_rater(campaign.id, "ann").token)
        task = ann.next_assignment(campaign.id).assignment
        ann.judge(task.id, "left")                          # retried safely: idempotent
        print(service.leaderboard(campaign.id).clips[0])

Results are the dataclasses of `client.models`; errors are `client.errors.ServiceError`
subclasses carrying the service's status and message.
"""

from client.calls import RetryPolicy
from client.clients import AsyncClient, Client
from client.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    NotFound,
    PayloadTooLarge,
    ServiceError,
    TooManyOpen,
    Unauthorized,
    Unavailable,
    Unreachable,
)
from client.models import (
    Assignment,
    AssignmentOut,
    BulkClipsAdded,
    Campaign,
    Clip,
    ClipRef,
    ClipReport,
    ClipsAdded,
    ClipStatus,
    ContextWeights,
    GoldAdded,
    GoldList,
    GoldPair,
    Health,
    ImportOut,
    JudgmentOut,
    Leaderboard,
    LeaderboardClip,
    NewClip,
    ProgressPoint,
    RaterCreated,
    RaterStats,
    RaterStatus,
    ReportOut,
    SkipFlags,
    SkippedClip,
    SkippedTask,
    Weight,
    Weights,
    WithheldClip,
    WithheldClips,
)

__all__ = [
    "Assignment",
    "AssignmentOut",
    "AsyncClient",
    "BadRequest",
    "BulkClipsAdded",
    "Campaign",
    "Client",
    "Clip",
    "ClipRef",
    "ClipReport",
    "ClipStatus",
    "ClipsAdded",
    "Conflict",
    "ContextWeights",
    "Forbidden",
    "GoldAdded",
    "GoldList",
    "GoldPair",
    "Gone",
    "Health",
    "ImportOut",
    "JudgmentOut",
    "Leaderboard",
    "LeaderboardClip",
    "NewClip",
    "NotFound",
    "PayloadTooLarge",
    "ProgressPoint",
    "RaterCreated",
    "RaterStats",
    "RaterStatus",
    "ReportOut",
    "RetryPolicy",
    "ServiceError",
    "SkipFlags",
    "SkippedClip",
    "SkippedTask",
    "TooManyOpen",
    "Unauthorized",
    "Unavailable",
    "Unreachable",
    "Weight",
    "Weights",
    "WithheldClip",
    "WithheldClips",
]
