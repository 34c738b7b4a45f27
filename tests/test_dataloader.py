"""A DataLoader fed by resolvers running side by side, through uvicorn: recorded against the
real PostgreSQL, replayed in a fresh ``TIMETRACER_MODE=replay`` process with the database at a
closed port. When recorded, the two parents' queries answered a moment apart, so each parent's
loads made a batch of their own; replayed, the second answer comes once the loop has run what
the first set going, and the batches are the recorded ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from _replay import Sent, assert_replayed_alike, run_fresh, send, uvicorn_process
from _services import closed_port
from conftest import cassettes_by_request, sql_calls

SENT: list[Sent] = [("GET", "/children", {})]
RECORDING = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_a_dataloaders_batches_replay_as_recorded(cassette_dir: Path, loop: str) -> None:
    """The same response from the same two batched queries, on either event loop (asyncio's
    shows what is ready to run; uvloop's does not)."""
    recorded, _ = run_fresh(
        "dataloader_app:from_environment",
        lambda url: send(url, SENT),
        TIMETRACER_MODE="record",
        TIMETRACER_DIR=str(cassette_dir),
        DATALOADER_APP_DATABASE=RECORDING,
    )
    assert recorded[0].json() == [[20, 30], [40, 50]]
    (doc,) = cassettes_by_request(cassette_dir)[("GET", "/children")]
    batches = [c for c in sql_calls(doc) if "unnest" in c["request"].get("statement", "")]
    assert len(batches) == 2  # one per parent, as the replies came a moment apart
    replaying = {
        "TIMETRACER_MODE": "replay",
        "TIMETRACER_CASSETTE": str(cassette_dir),
        "DATALOADER_APP_DATABASE": f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port()}/test",
    }
    with uvicorn_process(replaying, "dataloader_app:from_environment", "--loop", loop) as server:
        replayed = send(server.url, SENT)
    assert_replayed_alike(recorded, replayed, server.stderr, SENT)
