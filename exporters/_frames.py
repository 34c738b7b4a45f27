"""Length-prefixed pickle frames: the messages between the application and its writer process."""

from __future__ import annotations

import pickle
from typing import Any

_HEADER = 4


def frame(message: Any) -> bytes:
    """``message`` pickled, after its length (4 bytes, big-endian)."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return len(payload).to_bytes(_HEADER, "big") + payload


def unframe(data: bytes | bytearray) -> Any:
    """The message of one whole frame."""
    return pickle.loads(data[_HEADER:])


class FrameReader:
    """Collects bytes as they arrive and gives back each whole message once."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        """The messages completed by ``data``, in order."""
        self._buffer += data
        messages = []
        start = 0
        while len(self._buffer) - start >= _HEADER:
            size = int.from_bytes(self._buffer[start : start + _HEADER], "big")
            end = start + _HEADER + size
            if len(self._buffer) < end:
                break
            messages.append(unframe(self._buffer[start:end]))
            start = end
        del self._buffer[:start]
        return messages
