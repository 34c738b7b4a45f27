"""The app's non-determinism as part of the recording: clock, UUIDs and randomness.

During a recorded request every value the app draws from the clock, from UUIDs and from
randomness is kept, in order, per calling module and function; in replay the same request gets the
same values back, so keys, timestamps, salts and token expiry computed per run are the
recorded ones and the calls that carry them match. See ``docs/replay.md``.
"""

from .sources import install, real_time_ns, real_urandom
from .state import (
    NO_RECORDED_DRAWS,
    DrawRecorder,
    DrawReplayer,
    RecordedDraws,
    RecordedStream,
    activate,
    called,
    deactivate,
    decode_draws,
    end_startup,
    own_task,
    startup_draws,
    use_startup_draws,
)

__all__ = [
    "NO_RECORDED_DRAWS",
    "DrawRecorder",
    "DrawReplayer",
    "RecordedDraws",
    "RecordedStream",
    "activate",
    "called",
    "deactivate",
    "decode_draws",
    "end_startup",
    "install",
    "own_task",
    "real_time_ns",
    "real_urandom",
    "startup_draws",
    "use_startup_draws",
]
