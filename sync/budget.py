"""One rate budget per Loops team, shared by every run that sends for it at the same time.

Loops limits requests per team, not per run: two syncs of one team that each paced at the full
limit would run at twice it and fight through 429s. So each run, while it sends, is a member of
its team's budget, kept in a store every run can reach (a SQLite file in a per-user directory on
one host, `sync.budget_sqlite`; PostgreSQL across hosts, `sync.budget_pg`), and paces at its
share. The budget is named by a hash of the base URL and the API key (or `loops.team`): the key
itself is never stored.

How the shares hold the limit in every one-second window. A member's *footprint* is the most it
may have in the server's window: its share, and, for a second after it lowered its share or left,
the share it had (its requests sent under it still count there). Every change goes through one
transaction of the store, which reads every member and the store's clock: a member raises its
share only as far as the others' footprints leave free, and lowers it at once when the fair
share (the limit split evenly, whole requests, the earliest members taking the remainder) is
lower. So the footprints never add up to more than the limit. Each member renews its row every
`TICK`; a row not renewed within `LEASE` is a run that died, and its footprint lasts one more
window. A run that ends leaves with a footprint that lasts only until its last request is out of
the window: the others take its share on their next renewal.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import anyio

from sync.pacing import WINDOW, Pacer

__all__ = [
    "LEASE",
    "TICK",
    "Ask",
    "Grant",
    "Member",
    "SharedBudget",
    "Store",
    "StoreUnavailable",
    "budget_name",
    "budget_place",
    "is_postgresql",
    "open_store",
    "settle",
    "sharing",
]

TICK = 0.25  # seconds between renewals: how soon a member sees a share freed or wanted
LEASE = 3.0  # a member not renewed for this long has died; its share frees one window later
# A lowered share is written after the store's clock is read and applied after the commit; the
# footprint of the old one lasts this much longer than the window to cover both.
HANDOVER_MARGIN = 0.25


class StoreUnavailable(Exception):
    """The budget's store cannot be read or written. Never leaves a run: it paces alone (or at
    its last share) and says so in the report's warnings."""


@dataclass(frozen=True)
class Member:
    """One run's row in a budget. Times are the store's clock (epoch seconds)."""

    id: str
    limit: float  # the team's limit as this run knows it (its config's, or lower from Loops)
    joined: float
    share: float  # requests per second it may send from now on
    held: float = 0.0  # a share it had, still in the server's window ...
    held_until: float = 0.0  # ... until then
    expires: float = 0.0  # its lease: renewed every TICK while it runs

    def live(self, now: float) -> bool:
        return now < self.expires

    def footprint(self, now: float) -> float:
        """The most this member may have in the server's one-second window now."""
        used = self.share if now < self.expires + WINDOW else 0.0
        return max(used, self.held) if now < self.held_until else used

    def believable(self, now: float) -> Member:
        """The row as written at `now` at the latest: a wall clock set back must not make a
        dead run's row look alive for the hour it was set back."""
        return replace(
            self,
            expires=min(self.expires, now + LEASE),
            held_until=min(self.held_until, now + WINDOW + HANDOVER_MARGIN),
        )


@dataclass(frozen=True)
class Ask:
    """What a run tells its budget: who it is, the limit it knows and the share it paces at."""

    id: str
    limit: float
    share: float
    leaving: bool = False
    quiet_in: float = 0.0  # leaving: seconds until its last request is out of the window


@dataclass(frozen=True)
class Grant:
    """What the budget answers: the run's share, the team's limit, how many runs share it."""

    share: float
    limit: float
    runs: int

    @property
    def others(self) -> float:
        """What the other runs may spend in a window."""
        return max(0.0, self.limit - self.share)


@dataclass(frozen=True)
class Settlement:
    """One transaction's writes: rows to write (this run's; others' cut by `believable`) and
    rows to remove (runs gone, with no request left in the window; this run's own when it
    leaves quiet)."""

    grant: Grant
    writes: list[Member]
    gone: list[str] = field(default_factory=list)


class Store(Protocol):
    """Where a budget's members are kept. One transaction per call, serialised per budget."""

    where: str  # for messages: a path, or a URL without its password

    def transact(self, budget: str, decide: Callable[[float, list[Member]], Settlement]) -> Grant:
        """Lock `budget`, read the store's clock and its members, `decide`, write, commit."""
        ...

    def close(self) -> None: ...


def open_store(place: str) -> Store:
    """The store at a place `budget_place` gave. Raises StoreUnavailable."""
    if is_postgresql(place):
        try:
            from sync.budget_pg import PgStore  # noqa: PLC0415  # psycopg only when asked for
        except ImportError:
            raise StoreUnavailable(
                "psycopg is not installed (pip install 'psycopg[binary]')"
            ) from None
        return PgStore(place)
    from sync.budget_sqlite import SqliteStore  # noqa: PLC0415  # it imports this module

    return SqliteStore(Path(place))


def budget_name(base_url: str, api_key: str, team: str | None) -> str:
    """The budget a run belongs to: its team's name when the config gives one, else its API key,
    at one Loops (an emulator on another port is another team). Hashed: the key is never stored.
    """
    who = f"team\0{team}" if team else f"key\0{api_key}"
    return hashlib.sha256(f"loops-sync budget 1\0{base_url}\0{who}".encode()).hexdigest()[:32]


def budget_place(env: Mapping[str, str], state: str | None, state_dir: Path) -> str | None:
    """Where budgets are kept (None: off), from the environment `load_config` read.

    LOOPS_SYNC_BUDGET (a directory, a postgresql:// URL, or `off`); else the PostgreSQL state
    when there is one, so runs on other hosts share it; else a per-user directory, so every config
    of the user on this host shares it wherever the config lives ($XDG_STATE_HOME/loops-sync or
    ~/.local/state/loops-sync); without a home (a container's nameless user) the sync's own state
    directory, shared only by runs that use it.
    """
    given = env.get("LOOPS_SYNC_BUDGET", "").strip()
    if given.lower() == "off":
        return None
    if given:
        return given if is_postgresql(given) else str(Path(given).expanduser().resolve())
    state = env.get("LOOPS_SYNC_STATE") or state or ""
    if is_postgresql(state):
        return state
    if env.get("XDG_STATE_HOME", "").startswith("/"):
        return str(Path(env["XDG_STATE_HOME"]) / "loops-sync")
    home = Path(env["HOME"]) if env.get("HOME", "").startswith("/") else Path("~").expanduser()
    if home.is_absolute():
        return str(home / ".local" / "state" / "loops-sync")
    return str(state_dir)


def is_postgresql(place: str) -> bool:
    return place.startswith(("postgresql://", "postgres://"))


def settle(now: float, members: Sequence[Member], ask: Ask) -> Settlement:
    """The run's new row and share, given every member of its budget at the store's `now`."""
    rows = [member.believable(now) for member in members]
    mine = next((m for m in rows if m.id == ask.id), None)
    others = [m for m in rows if m.id != ask.id]
    gone = [m.id for m in others if not m.live(now) and m.footprint(now) == 0]
    cut = [m for m, was in zip(rows, members, strict=True) if m != was and m.id not in gone]
    settled = _leave(now, mine, ask) if ask.leaving else _stay(now, mine, others, ask)
    mine_written = {m.id for m in settled.writes}
    writes = settled.writes + [m for m in cut if m.id not in mine_written]
    return Settlement(settled.grant, writes, gone + settled.gone)


def _stay(now: float, mine: Member | None, others: list[Member], ask: Ask) -> Settlement:
    """The share of a run that goes on sending: lower at once, higher as far as is free."""
    live = [m for m in others if m.live(now)]
    limit = min([ask.limit, *(m.limit for m in live)])
    joined = mine.joined if mine is not None else now
    order = sorted([(m.joined, m.id) for m in live] + [(joined, ask.id)])
    fair = fair_share(limit, len(order), order.index((joined, ask.id)))
    if fair < ask.share:
        share = fair
    else:  # keep what the budget still counts as this run's (a lapsed run's row may be gone)
        free = limit - sum(m.footprint(now) for m in others)
        kept = min(ask.share, mine.footprint(now)) if mine is not None else 0.0
        share = max(kept, min(fair, free))
    held, held_until = (mine.held, mine.held_until) if mine is not None else (0.0, 0.0)
    if share < ask.share:
        held = max(ask.share, held if now < held_until else 0.0)
        held_until = now + WINDOW + HANDOVER_MARGIN
    row = Member(ask.id, ask.limit, joined, share, held, held_until, now + LEASE)
    return Settlement(Grant(share, limit, len(order)), [row])


def _leave(now: float, mine: Member | None, ask: Ask) -> Settlement:
    """A run that stops sending holds what it may have in the window (its share, or a higher
    one it had within the last second) only while its requests are in the window."""
    grant = Grant(0.0, ask.limit, 0)
    held = max(ask.share, mine.held if mine is not None and now < mine.held_until else 0.0)
    if ask.quiet_in <= 0 or held <= 0:
        return Settlement(grant, [], [ask.id])
    joined = mine.joined if mine is not None else now
    row = Member(ask.id, ask.limit, joined, 0.0, held, now + ask.quiet_in, now)
    return Settlement(grant, [row])


def fair_share(limit: float, runs: int, index: int) -> float:
    """The share of the `index`-th run (in joining order) of `runs` sharing `limit`.

    Whole requests per second: a pacer allows floor(share) requests in a window, so fractional
    shares would waste the fractions. The earliest runs take the remainder; beyond `limit` runs,
    the latest wait for a share. A run alone keeps the whole limit, fraction included.
    """
    if runs == 1:
        return limit
    units = math.floor(limit)
    if units == 0:
        return limit if index == 0 else 0.0
    base, extra = divmod(units, runs)
    return float(base + (1 if index < extra else 0))


class SharedBudget:
    """This run's membership of its team's budget while it sends: the pacer follows the share.

    The store is blocking (SQLite, psycopg): each transaction runs in a worker thread, one at a
    time. A store that fails after the join leaves the pacer at its last share (the
    `x-ratelimit-*` headers and 429s still guard the limit) and sets `warning`. Made in the
    event loop that runs it.
    """

    def __init__(
        self,
        store: Store,
        budget: str,
        pacer: Pacer,
        *,
        clock: Callable[[], float] = time.monotonic,
        tick: float = TICK,
    ) -> None:
        self.store = store
        self.budget = budget
        self.pacer = pacer
        self.id = secrets.token_hex(8)
        self.most_runs = 0  # the most runs seen sharing the budget at once, this one included
        self.warning: str | None = None
        self._clock = clock
        self._tick = tick
        self._renewed_at = -math.inf
        self._one_at_a_time = anyio.Lock()
        self._renewing = anyio.CancelScope()

    async def join(self) -> None:
        """Become a member; the pacer sends nothing until the budget grants a share.

        Raises StoreUnavailable (the pacer untouched: the run paces alone).
        """
        grant = await self._exchange(Ask(self.id, self.pacer.limit, 0.0))  # nothing sent yet
        self._apply(grant)

    async def keep(self) -> None:
        """Renew the membership every tick and follow the share, until `leave()`."""
        with self._renewing:
            while True:
                await anyio.sleep(self._tick)
                try:
                    grant = await self._exchange(Ask(self.id, self.pacer.limit, self.pacer.rate))
                except StoreUnavailable as error:
                    self._lapsed(error)
                    continue
                self._apply(grant)

    async def leave(self) -> None:
        """Give the share back, keeping it only while this run's last requests still count."""
        self._renewing.cancel()
        ask = Ask(self.id, self.pacer.limit, self.pacer.rate, True, self.pacer.quiet_in())
        # A store that fails now: the lease runs out instead, the share frees seconds later.
        with anyio.CancelScope(shield=True), anyio.move_on_after(5), suppress(StoreUnavailable):
            await self._exchange(ask)

    async def _exchange(self, ask: Ask) -> Grant:
        def decide(now: float, members: list[Member]) -> Settlement:
            return settle(now, members, ask)

        async with self._one_at_a_time:
            started = self._clock()
            grant = await anyio.to_thread.run_sync(self.store.transact, self.budget, decide)
        self._renewed_at = started
        return grant

    def _apply(self, grant: Grant) -> None:
        self.most_runs = max(self.most_runs, grant.runs)
        self.pacer.share(grant.share, others=grant.others)

    def _lapsed(self, error: StoreUnavailable) -> None:
        """Once the lease has run out unrenewed, the others count this run as gone: say so."""
        if self.warning is None and self._clock() - self._renewed_at > LEASE:
            self.warning = (
                f"the shared rate budget ({self.store.where}) could not be renewed ({error}); "
                f"this run went on at {self.pacer.rate:g} requests/s"
            )


@asynccontextmanager
async def sharing(
    open_store: Callable[[], Store],
    budget: str,
    pacer: Pacer,
    group: anyio.abc.TaskGroup,
) -> AsyncIterator[list[str]]:
    """Pace `pacer` at its share of `budget` for the duration of the block, renewing it in
    `group`. Yields the warnings to report (filled on the way out): a store that cannot be
    opened or joined leaves the pacer the whole limit, and says so.
    """
    warnings: list[str] = []
    try:
        store = await anyio.to_thread.run_sync(open_store)
    except StoreUnavailable as error:
        warnings.append(_alone(str(error), pacer))
        yield warnings
        return
    try:
        member = SharedBudget(store, budget, pacer)
        joined = await _join(member, warnings)
        if joined:
            group.start_soon(member.keep)
        try:
            yield warnings
        finally:
            if joined:
                await member.leave()
                warnings.extend([member.warning] if member.warning else [])
    finally:
        store.close()


async def _join(member: SharedBudget, warnings: list[str]) -> bool:
    try:
        await member.join()
    except StoreUnavailable as error:
        warnings.append(_alone(f"{member.store.where}: {error}", member.pacer))
        return False
    return True


def _alone(reason: str, pacer: Pacer) -> str:
    return (
        f"the shared rate budget could not be used ({reason}); this run paced alone at "
        f"{pacer.limit:g} requests/s, as if no other run of the team were sending"
    )
