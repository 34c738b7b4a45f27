"""A closed-loop HTTP/1.1 load generator on raw asyncio streams, run as its own process.

    python bench/_load.py URL --concurrency 8 (--seconds 4 | --requests 1000)

``concurrency`` keep-alive connections each send ``GET`` after ``GET`` for the given time
(or until the given number of requests is done) and time every response. Prints one
JSON object: ``latencies_us`` (one per 200 response), ``errors`` (other statuses or
failed connections) and ``elapsed_s``. Kept minimal so the client costs little CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import urlsplit


async def _connection(
    host: str,
    port: int,
    target: str,
    stop_at: float,
    budget: list[int] | None,
    latencies: list[float],
) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    request = f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode("ascii")
    errors = 0
    try:
        while time.perf_counter() < stop_at:
            if budget is not None:
                if budget[0] <= 0:
                    break
                budget[0] -= 1
            started = time.perf_counter_ns()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            if head[9:12] == b"200":
                latencies.append((time.perf_counter_ns() - started) / 1000)
            else:
                errors += 1
    finally:
        writer.close()
    return errors


async def run(url: str, concurrency: int, seconds: float | None, requests: int | None) -> dict:
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    latencies: list[float] = []
    started = time.perf_counter()
    stop_at = started + (seconds if seconds is not None else 3600)
    budget = [requests] if requests is not None else None
    outcomes = await asyncio.gather(
        *(
            _connection(parts.hostname, parts.port, target, stop_at, budget, latencies)
            for _ in range(concurrency)
        ),
        return_exceptions=True,
    )
    errors = sum(o if isinstance(o, int) else 1 for o in outcomes)
    return {"latencies_us": latencies, "errors": errors, "elapsed_s": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--concurrency", type=int, default=8)
    limit = parser.add_mutually_exclusive_group(required=True)
    limit.add_argument("--seconds", type=float)
    limit.add_argument("--requests", type=int)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.url, args.concurrency, args.seconds, args.requests))))


if __name__ == "__main__":
    main()
