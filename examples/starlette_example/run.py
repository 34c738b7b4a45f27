"""Record one request end to end, then replay it with the upstream gone.

1. starts ``upstream.py`` on a free port of 127.0.0.1 (it answers like api.github.com);
2. runs ``uvicorn app:app`` on a free port of 127.0.0.1 with ``TIMETRACER_MODE=record``;
3. sends ``GET /``, waits for timetracer's console line, stops uvicorn;
4. checks the cassette holds the upstream call and prints where it is;
5. stops the upstream, runs the app again with ``TIMETRACER_MODE=replay`` and
   ``TIMETRACER_CASSETTE`` set to that cassette, sends ``GET /`` again and checks the
   response is byte for byte the recorded one.

Cassettes go to ``$TIMETRACER_DIR`` if set, else to ``cassettes/`` next to this file.
Exits 1 if any step fails. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import IO, Any

import upstream

HERE = Path(__file__).resolve().parent
STARTUP_SECONDS = 60.0  # a cold machine imports OpenTelemetry slowly; this only bounds a failure
STEP_SECONDS = 30.0

_LISTENING = re.compile(r"Uvicorn running on (http://127\.0\.0\.1:\d+)")
_RECORDED = re.compile(r"^timetracer \[(OK|ERR)\] recorded ")
_REPLAYED = re.compile(r"^timetracer \[(OK|DIFF)\] replayed ")
_CASSETTE = re.compile(r"^  cassette: (.+)$")


class ExampleFailed(Exception):
    """A step of the example did not do what it should."""


class _Output:
    """uvicorn's merged stdout/stderr, read line by line in a thread so waits can have deadlines."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)  # uvicorn closed its output: it has exited

    def expect(self, pattern: re.Pattern[str], timeout: float, what: str) -> re.Match[str]:
        """The first new line matching ``pattern``; ``ExampleFailed`` if uvicorn exits or time runs out."""
        while True:
            try:
                line = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise ExampleFailed(f"no {what} within {timeout:.0f}s") from None
            if line is None:
                raise ExampleFailed(f"uvicorn exited before {what}")
            self.lines.append(line)
            match = pattern.search(line)
            if match:
                return match

    def rest(self, timeout: float) -> None:
        """Keep what uvicorn prints until it closes its output."""
        while (line := self._queue.get(timeout=timeout)) is not None:
            self.lines.append(line)


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=STEP_SECONDS) as response:
        return response.status, response.read()


def _check_cassette(path: Path) -> dict[str, Any]:
    """The cassette, if it recorded ``GET /`` with the upstream call answered 200."""
    if not path.is_file():
        raise ExampleFailed(f"cassette {path} does not exist")
    doc = json.loads(path.read_text("utf-8"))
    calls = [c for c in doc["calls"] if c["request"]["url"].endswith("/users/octocat")]
    if doc["request"]["path"] != "/" or doc["response"]["status"] != 200:
        raise ExampleFailed(f"cassette {path} does not hold GET / answered 200")
    if len(calls) != 1 or (calls[0]["response"] or {}).get("status") != 200:
        raise ExampleFailed(f"cassette {path} does not hold the /users/octocat call answered 200")
    return doc


def _stop(process: subprocess.Popen[str], output: _Output) -> None:
    """Stop uvicorn as Ctrl+C does (graceful shutdown, exit status 0) and collect its last lines."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(STEP_SECONDS)
        output.rest(STEP_SECONDS)
    except (subprocess.TimeoutExpired, queue.Empty):
        raise ExampleFailed("uvicorn did not stop on SIGINT") from None
    if process.returncode != 0:
        raise ExampleFailed(f"uvicorn exited with status {process.returncode}")


class _App:
    """``uvicorn app:app`` in a subprocess with the given timetracer environment."""

    def __init__(self, env: dict[str, str]) -> None:
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "app:app",
            "--app-dir",
            str(HERE),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ]
        self.process = subprocess.Popen(
            command,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8", **env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            encoding="utf-8",
            errors="replace",
        )
        self.output = _Output(self.process.stdout)

    def request_root(self) -> tuple[int, bytes, list[str]]:
        """``GET /`` once uvicorn listens; the status, the body, and timetracer's two console lines."""
        url = self.output.expect(_LISTENING, STARTUP_SECONDS, "'Uvicorn running on' line").group(1)
        status, body = _get(url + "/")
        line = self.output.expect(
            re.compile(f"{_RECORDED.pattern}|{_REPLAYED.pattern}"), STEP_SECONDS, "timetracer line"
        )
        cassette_line = self.output.expect(_CASSETTE, STEP_SECONDS, "cassette path line")
        _stop(self.process, self.output)
        return status, body, [line.string, cassette_line.string]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def main() -> int:
    cassette_dir = Path(os.environ.get("TIMETRACER_DIR") or HERE / "cassettes").resolve()
    upstream_server = upstream.start()
    upstream_url = f"http://127.0.0.1:{upstream_server.server_address[1]}"
    apps: list[_App] = []
    try:
        print(f"upstream  {upstream_url}  (stands in for https://api.github.com)")
        recorder = _App(
            {
                "TIMETRACER_MODE": "record",
                "TIMETRACER_DIR": str(cassette_dir),
                "UPSTREAM_URL": upstream_url,
            }
        )
        apps.append(recorder)
        status, body, recorded = recorder.request_root()
        print(f"record  GET /  ->  {status} {body.decode()}")
        if (status, json.loads(body)) != (200, {"user": "octocat"}):
            raise ExampleFailed('expected 200 {"user": "octocat"}')
        print("\n".join(recorded))
        shown = Path(_CASSETTE.match(recorded[1]).group(1))
        path = shown if shown.is_absolute() else Path.cwd() / shown
        doc = _check_cassette(path)

        upstream_server.shutdown()
        upstream_server.server_close()
        print(
            f"upstream stopped; replaying {path.name} (calls={len(doc['calls'])} spans={len(doc['spans'])})"
        )
        replayer = _App(
            {
                "TIMETRACER_MODE": "replay",
                "TIMETRACER_CASSETTE": str(path),
                "UPSTREAM_URL": upstream_url,
            }
        )
        apps.append(replayer)
        replay_status, replay_body, replayed = replayer.request_root()
        print(f"replay  GET /  ->  {replay_status} {replay_body.decode()}")
        print("\n".join(replayed))
        if (replay_status, replay_body) != (status, body) or "[OK]" not in replayed[0]:
            raise ExampleFailed("the replayed response differs from the recorded one")
    except (ExampleFailed, OSError, ValueError, KeyError) as exc:
        for app in apps:
            app.kill()
            print("\n".join(["uvicorn output:", *app.output.lines]), file=sys.stderr)
        print(f"example FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        upstream_server.shutdown()
    print(f"cassette  {path.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
