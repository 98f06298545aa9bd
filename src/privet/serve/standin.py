"""A local stand-in for an OpenAI-compatible chat upstream, for the demo, tests and benchmarks.

It answers ``POST /v1/chat/completions`` by quoting the last user message back (``"You said: ..."``), so whatever
the gateway sent upstream (masked tokens, never the originals) comes back in the reply for the gateway to restore.
With ``stream: true`` it sends the reply as server-sent events in chunks of ``chunk`` characters, which splits
tokens across events the way real models do. It logs nothing; given a list as ``seen``, it appends to it each
last user message it received (in memory, so the demo can show what left the gateway).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

__all__ = ["standin_app"]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def standin_app(chunk: int = 7, seen: list[str] | None = None) -> FastAPI:
    app = FastAPI(title="stand-in upstream")

    @app.post("/v1/chat/completions", response_model=None)
    async def completions(request: Request) -> Response:
        body = await request.json()
        messages = body.get("messages") or []
        last = next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), {})
        said = _text(last.get("content"))
        if seen is not None:
            seen.append(said)
        reply = "You said: " + said
        created, model = int(time.time()), str(body.get("model", "standin"))
        if not body.get("stream"):
            return JSONResponse({
                "id": "chatcmpl-standin", "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            })  # fmt: skip

        def events() -> Iterator[str]:
            base = {"id": "chatcmpl-standin", "object": "chat.completion.chunk", "created": created, "model": model}
            for start in range(0, len(reply), chunk):
                delta = {"content": reply[start : start + chunk]}
                yield f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': delta}]})}\n\n"
            final = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            yield f"data: {json.dumps(final)}\n\ndata: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app
