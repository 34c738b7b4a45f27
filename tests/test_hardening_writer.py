"""Recording survives a disk that fails mid-run and recovers: requests never fail, later ones are recorded.

Two real failures: the cassette directory replaced by a file (every write fails before
it starts), and a file-size limit lower than a cassette set on the writer process (every
write fails halfway; in a fresh process, so that no other test shares that writer). In both, the requests made
while the disk fails succeed and are counted as ``errors.write``; once the disk is back,
the next requests are recorded again, and no partial file is left behind.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from _record_support import run_python, stat
from test_record_safety import safety_app

import timetracer_otel
from timetracer_otel.config import TraceConfig

_EXPECTED = {
    "queries": ["n=0", "n=1", "n=2", "n=6", "n=7", "n=8"],
    "write_errors": 3,
    "leftovers": [],
}


def record_through_failure(
    url: str, cassettes: Path, break_disk: Callable[[], None], repair_disk: Callable[[], None]
) -> dict[str, Any]:
    """Send ``/?n=0..2``, break the disk, ``n=3..5``, repair it, ``n=6..8``; report what was written."""
    with httpx.Client(timeout=15) as client:

        def send(numbers: range) -> None:
            assert [client.get(f"{url}/", params={"n": n}).status_code for n in numbers] == [
                200
            ] * len(numbers)
            assert timetracer_otel.flush(30)

        errors_before = stat("errors.write")
        send(range(0, 3))
        break_disk()
        send(range(3, 6))
        write_errors = stat("errors.write") - errors_before
        repair_disk()
        send(range(6, 9))
    return {
        "queries": sorted(
            json.loads(p.read_text("utf-8"))["request"]["query"] for p in cassettes.rglob("*.json")
        ),
        "write_errors": write_errors,
        "leftovers": sorted(
            p.name for p in cassettes.rglob("*") if p.is_file() and p.suffix != ".json"
        ),
    }


def test_directory_replaced_by_a_file_then_restored(
    serve: Callable[..., Any], record_config: TraceConfig, cassette_dir: Path
) -> None:
    url = serve(safety_app(record_config)).url
    moved = cassette_dir.with_name("moved-away")

    def break_disk() -> None:
        cassette_dir.rename(moved)
        cassette_dir.write_text("a file where the cassette directory was")

    def repair_disk() -> None:
        cassette_dir.unlink()
        moved.rename(cassette_dir)

    assert record_through_failure(url, cassette_dir, break_disk, repair_disk) == _EXPECTED


_SIZE_LIMIT_SCRIPT = """
import json, resource, sys
from pathlib import Path
from opentelemetry import trace
from conftest import start_uvicorn
from test_hardening_writer import record_through_failure
from test_record_safety import safety_app
from timetracer_otel._tracing import cassette_processor
from timetracer_otel.config import TraceConfig

cassettes = Path(sys.argv[1])
server = start_uvicorn(safety_app(TraceConfig(mode="record", cassette_dir=str(cassettes))))
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)


def limit(size):  # on the process that writes the cassettes, started by the first recording
    resource.prlimit(cassette_processor(trace.get_tracer_provider()).writer.process_id, resource.RLIMIT_FSIZE, (size, hard))


report = record_through_failure(server.url, cassettes, lambda: limit(512), lambda: limit(soft))  # a cassette is several KiB
server.stop()
print(json.dumps(report))
"""


def test_writes_failing_halfway_then_succeeding_again(cassette_dir: Path) -> None:
    result = run_python(_SIZE_LIMIT_SCRIPT, str(cassette_dir))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == _EXPECTED
    # reported once
    assert result.stderr.count("timetracer: write failed: OSError: [Errno 27] File too large") == 1
