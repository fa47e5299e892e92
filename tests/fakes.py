"""Fakes that record what they received, for unit tests (end-to-end tests use the emulator)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import httpx
import orjson

Answer = int | httpx.Response | Exception


class ScriptedLoops:
    """An `httpx.MockTransport` handler: scripted answers per path, then `default`; keeps requests.

    `ScriptedLoops({"/api/v1/contacts/update": [429, 500, 200]})` answers the first upsert 429,
    the second 500, and every later one 200.
    """

    def __init__(self, script: dict[str, list[Answer]] | None = None, default: int = 200) -> None:
        self.script: dict[str, list[Answer]] = defaultdict(list, script or {})
        self.default = default
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
