"""The types the stages hand each other: the row-number column, a request, a job, an event's
occurrence, and one word for what happened to a request, from Loops' answer to the ledger; a
run as `history` lists it.

They live apart from the stages so that each stage depends on them and not on the stage before
it: the sender knows a `Job` without importing the planner, the ledger an `Occurrence` without
the sender. Standard library only: `import sync.sender` must not pull in Polars, pydantic or
YAML (a test holds it to that).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

__all__ = [
    "Answer",
    "Job",
    "Occurrence",
    "Outcome",
    "ReadProgress",
    "Request",
    "RequestKind",
    "RequestResult",
    "RunRecord",
    "RunStatus",
    "SendProgress",
]


RequestKind = Literal["contact", "event", "removal"]


class Outcome(StrEnum):
    """What happened to a request: the one vocabulary of `classify()`, of the errors a request
    raises, of a `RequestResult` and of the recorder that writes it to the ledger.

    `classify()` names an answer with the first five; a request that was never answered is
    DEFERRED or NOT_SENT. A member equals its word ("delivered"), as reports and logs spell it.
    """

    DELIVERED = "delivered"  # Loops took it: the ledger records it
    DUPLICATE = "duplicate"  # an event whose Idempotency-Key Loops has seen: delivered before
    REJECTED = "rejected"  # can never succeed as it is: the row goes to the rejects file
    FAILED = "failed"  # may succeed later (rate limited, a 5xx, no answer): tried again
    FATAL = "fatal"  # no request can succeed (a bad key, a wrong URL): the run stops
    DEFERRED = "deferred"  # not sent: it waits for its contact's upsert, which did not land
    NOT_SENT = "not_sent"  # not sent: the run stopped first; the next run sends it


@dataclass(frozen=True, slots=True)
class Occurrence:
    """What the ledger keeps of a delivered event besides its key: its keys by email and by
    userId, the identifiers themselves and its `once_per` values (a JSON object)."""

    key_email: str | None = None
    key_user: str | None = None
    email: str | None = None
    user_id: str | None = None
    once_per: str | None = None


@dataclass(frozen=True, slots=True)
class Request:
    """One API call: its body is the exact canonical JSON that was hashed."""

    kind: RequestKind
    row: int
    identity: str
    ref: str  # a contact's payload hash, an event's Idempotency-Key, a removal's action
    body: bytes
    event: str | None = None
    folded: Request | None = None  # the contact upsert this event carries, if any
    occurrence: Occurrence | None = None  # an event's other keys and identifiers, for the ledger


@dataclass(frozen=True, slots=True)
class Job:
    """One identity's requests, sent in order by one worker."""

    identity: str
    requests: tuple[Request, ...]


@dataclass(frozen=True)
class Answer:
    """A classified answer, with the rate-limit headers the pacer watches."""

    outcome: Outcome
    status: int  # the HTTP status
    message: str
    limit: int | None = None
    remaining: int | None = None
    team: str = ""  # the key check's `teamName`


@dataclass(frozen=True)
class RequestResult:
    """A request's fate, as the sender reports it to the recorder."""

    request: Request
    status: Outcome
    message: str = ""
    # The fate of an upsert that rode on an event: no planned request of its own (a plain
    # upsert sent after the event's 409 or 400 counts as part of the event's).
    rider: bool = False


@dataclass(frozen=True)
class SendProgress:
    """How far sending has come: planned requests settled (sent, refused, left) of the plan's
    total, an upsert riding on an event counted once with it, as Loops counts requests.
    The library reports it through `Options.on_progress`; what to show is the caller's.
    `ends_by`: when `--max-duration` stops sending (`time.monotonic()`), so an ETA can say
    which comes first."""

    done: int
    total: int
    ends_by: float | None = None


@dataclass(frozen=True)
class ReadProgress:
    """How far reading the source has come: rows read so far (their total is not known before
    the end), reported after each slice and once more, `finished`, at the end of the source.
    Reported through `Options.on_read` and `plan_sync(on_read=)`."""

    rows: int
    finished: bool = False


RunStatus = Literal["running", "finished", "failed", "died"]


@dataclass(frozen=True)
class RunRecord:
    """One run in the history. `reason` says how it ended: an error's message, the work it left,
    or why it is marked died; `counts` is its JSON report (empty for a run that died)."""

    id: int
    started_at: float
    ended_at: float | None
    exit_code: int | None
    counts: dict[str, Any]
    status: RunStatus
    reason: str | None
