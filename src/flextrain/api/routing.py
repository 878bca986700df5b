"""Every router's route class: JSON bodies must be text that UTF-8 can hold.

Python's json module accepts a lone surrogate escape (`"\\ud800"`) and hands
back a str that cannot be encoded: the database, a log line or the error
response itself then fails with UnicodeEncodeError, a 500 for what is bad
input. The API's request reads its JSON body here instead and refuses such a
body as a JSON decode error, which FastAPI answers with a 422 naming the
position; so is a body nested too deeply to parse (RecursionError, else a bare
400). API fuzzing found both; see docs/reliability.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from flextrain.public import has_unencodable_text

# A \uD800-\uDFFF escape; a pair (high then low) decodes to one character and is fine.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
TOO_DEEP = "lists or objects nested deeper than the parser allows"
LONE_SURROGATE = "a \\uD800-\\uDFFF escape that is not part of a surrogate pair (not valid Unicode)"


def loads_strict(body: bytes) -> Any:
    """`json.loads`, refusing lone surrogate escapes and nesting too deep to parse
    (RecursionError, which FastAPI would answer with a bare 400) as JSONDecodeError."""
    try:
        value = json.loads(body)
    except RecursionError:
        doc = body.decode("utf-8", errors="replace")
        raise json.JSONDecodeError(TOO_DEEP, doc, 0) from None
    first = _SURROGATE_ESCAPE.search(body)
    if first is not None and has_unencodable_text(value):
        doc = body.decode("utf-8", errors="replace")
        raise json.JSONDecodeError(LONE_SURROGATE, doc, first.start())
    return value


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads_strict(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """An APIRoute whose handler reads the body through StrictJSONRequest."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict_handler
