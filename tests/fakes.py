"""Fakes that record what they received, for unit tests (end-to-end tests use the emulator)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import httpx
import orjson

Answer = int | httpx.Response | Exception

# What an account answers when a test scripts nothing else: the default contact properties and
# no mailing lists (a run's account check then passes for a mapping of defaults only).
ACCOUNT: dict[str, Any] = {
    "/api/v1/contacts/properties": [
        {"key": key, "label": key, "type": kind}
        for key, kind in (
            ("email", "string"),
            ("firstName", "string"),
            ("lastName", "string"),
            ("source", "string"),
            ("subscribed", "boolean"),
            ("userGroup", "string"),
            ("userId", "string"),
        )
    ],
    "/api/v1/lists": [],
}


class ScriptedLoops:
    """An `httpx.MockTransport` handler: scripted answers per path, then `default`; keeps requests.

    `ScriptedLoops({"/api/v1/contacts/update": [429, 500, 200]})` answers the first upsert 429,
    the second 500, and every later one 200. A 200 to the account's properties or lists (a
    run's check before sending) carries `account[path]`: the default properties, no lists.
    """

    def __init__(
        self,
        script: dict[str, list[Answer]] | None = None,
        default: int = 200,
        account: dict[str, Any] | None = None,
    ) -> None:
        self.script: dict[str, list[Answer]] = defaultdict(list, script or {})
        self.default = default
        self.account = ACCOUNT if account is None else account
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        queue = self.script[request.url.path]
        answer = queue.pop(0) if queue else self.default
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer
        ok = 200 <= answer < 300
        if ok and request.method == "GET" and request.url.path in self.account:
            return httpx.Response(answer, json=self.account[request.url.path])
        body: dict[str, Any] = {"success": True}
        if not ok:
            body = {"success": False, "message": f"scripted {answer}"}
        return httpx.Response(answer, json=body)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def bodies(self, path_end: str) -> list[dict[str, Any]]:
        return [orjson.loads(r.content) for r in self.requests if r.url.path.endswith(path_end)]

    def paths(self) -> list[str]:
        return [r.url.path.removeprefix("/api") for r in self.requests]
