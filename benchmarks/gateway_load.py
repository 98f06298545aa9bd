"""The load generator of ``benchmarks/gateway.py``: a closed loop of N keep-alive HTTP/1.1 connections on uvloop.

Run as its own process (``python benchmarks/gateway_load.py TARGETS.json``); it reads one JSON command per line
on stdin and answers one JSON line on stdout per command::

    {"target": "privet_predict", "warmup": 2.0, "seconds": 5.0, "client": "raw"}
    -> {"rps": ..., "p50_ms": ..., "p99_ms": ..., "completed": ..., "total": ..., "errors": ..., "client_cpu_s": ...}

``TARGETS.json`` maps a target name to ``{"port", "path", "headers", "bodies", "concurrency"}``. Each of the
``concurrency`` workers owns one connection and sends its next request as soon as the previous answer is read,
cycling through the bodies. Requests that complete in the ``seconds`` after the ``warmup`` count; their latency
is the time from writing the request to reading the last byte of the answer.

``client: "raw"`` speaks HTTP/1.1 over asyncio streams with pre-encoded requests (a few microseconds of client
CPU per request); ``client: "httpx"`` sends the same requests through one ``httpx.AsyncClient`` whose pool holds
``concurrency`` keep-alive connections, to show what the choice of client costs.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from typing import Any

HOST = "127.0.0.1"


def _encode(port: int, path: str, headers: dict[str, str], body: str) -> bytes:
    data = body.encode()
    lines = [f"POST {path} HTTP/1.1", f"Host: {HOST}:{port}", "Content-Type: application/json",
             f"Content-Length: {len(data)}", *(f"{k}: {v}" for k, v in headers.items())]  # fmt: skip
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one whole response (Content-Length or chunked); its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at >= 0:
        end = lower.find(b"\r\n", at + 2)
        await reader.readexactly(int(lower[at + 17 : end]))
        return status
    if b"transfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers are sent by uvicorn
                return status
            await reader.readexactly(size + 2)
    raise ConnectionError("a response with neither Content-Length nor chunked encoding")


def _percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def run(target: dict[str, Any], warmup: float, seconds: float, client: str) -> dict[str, Any]:
    port, path, headers, bodies = target["port"], target["path"], target["headers"], target["bodies"]
    concurrency = int(target.get("concurrency", 16))
    latencies: list[float] = []
    totals = {"total": 0, "errors": 0}
    clock = time.perf_counter
    began = clock()
    start, stop = began + warmup, began + warmup + seconds
    usage = resource.getrusage(resource.RUSAGE_SELF)

    def done(sent: float, status: int) -> None:
        now = clock()
        totals["total"] += 1
        if status != 200:
            totals["errors"] += 1
        elif start <= now < stop:
            latencies.append(now - sent)

    async def raw_worker(k: int) -> None:
        requests = [_encode(port, path, headers, b) for b in bodies]
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            totals["errors"] += 1
            return
        i = k
        try:
            while clock() < stop:
                sent = clock()
                writer.write(requests[i % len(requests)])
                i += concurrency
                done(sent, await _read_response(reader))
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            totals["errors"] += 1  # the server closed or broke the connection: this worker stops
        finally:
            writer.close()

    async def httpx_workers() -> None:
        import httpx

        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", limits=limits, timeout=60) as session:
            contents = [b.encode() for b in bodies]
            request_headers = {"Content-Type": "application/json", **headers}

            async def worker(k: int) -> None:
                i = k
                while clock() < stop:
                    sent = clock()
                    reply = await session.post(path, content=contents[i % len(contents)], headers=request_headers)
                    i += concurrency
                    done(sent, reply.status_code)

            await asyncio.gather(*(worker(k) for k in range(concurrency)))

    if client == "raw":
        await asyncio.gather(*(raw_worker(k) for k in range(concurrency)))
    else:
        await httpx_workers()
    after = resource.getrusage(resource.RUSAGE_SELF)
    latencies.sort()
    return {
        "rps": len(latencies) / seconds,
        "p50_ms": _percentile(latencies, 50) * 1000,
        "p99_ms": _percentile(latencies, 99) * 1000,
        "completed": len(latencies),
        "total": totals["total"],
        "errors": totals["errors"],
        "client_cpu_s": (after.ru_utime + after.ru_stime) - (usage.ru_utime + usage.ru_stime),
        "wall_s": clock() - began,
    }


def main() -> int:
    import uvloop

    targets = json.loads(open(sys.argv[1]).read())  # noqa: PTH123, SIM115 - a small file read once
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    for line in sys.stdin:
        command = json.loads(line)
        result = loop.run_until_complete(
            run(targets[command["target"]], command["warmup"], command["seconds"], command.get("client", "raw"))
        )
        print(json.dumps(result), flush=True)
    loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
