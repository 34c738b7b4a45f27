"""gRPC messages and metadata in the cassette form of :mod:`timetracer_otel.protocols.grpc`, and back.

Capture and replay both turn a live request into that form (replay to match it), and
replay turns recorded responses back into messages: the conversions live here, beside
the protocol module that must not import protobuf.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.message import Message

__all__ = ["message_entry", "message_from", "metadata_pairs", "metadata_from"]

Serializer = Callable[[Any], bytes] | None
Deserializer = Callable[[bytes], Any] | None


def _json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _same_from_json(message: Message, data: dict[str, Any]) -> bool:
    rebuilt = type(message)()
    json_format.ParseDict(data, rebuilt)
    return rebuilt.SerializeToString(deterministic=True) == message.SerializeToString(
        deterministic=True
    )


def message_entry(message: Any, serializer: Serializer) -> dict[str, Any]:
    """``{"type", "json"}`` for a protobuf message (with ``"bytes"`` when JSON does not give it
    back exactly); ``{"type", "bytes"}`` for another message, serialized as the channel sends it."""
    if isinstance(message, Message):
        entry: dict[str, Any] = {"type": message.DESCRIPTOR.full_name, "json": _json(message)}
        if not _same_from_json(message, entry["json"]):
            entry["bytes"] = message.SerializeToString()
        return entry
    cls = type(message)
    data = serializer(message) if serializer is not None else message
    return {"type": f"{cls.__module__}.{cls.__qualname__}", "bytes": bytes(data)}


def message_from(entry: dict[str, Any], deserializer: Deserializer) -> Any:
    """The message ``entry`` records: its bytes through the channel's deserializer when it has
    them, else its JSON parsed into its type (which the application's ``_pb2`` module registered)."""
    if "bytes" in entry:
        data = entry["bytes"]
        return deserializer(data) if deserializer is not None else data
    descriptor = descriptor_pool.Default().FindMessageTypeByName(entry["type"])
    message = message_factory.GetMessageClass(descriptor)()
    json_format.ParseDict(entry["json"], message)
    return message


def metadata_pairs(metadata: Iterable[Any] | None) -> list[list[Any]]:
    """Metadata (tuples of key and value, or gRPC's ``Metadatum``) as ``[key, value]`` lists."""
    return [[key, value] for key, value in metadata or ()]


def metadata_from(pairs: Iterable[Any] | None) -> tuple[tuple[str, Any], ...]:
    """Recorded ``[key, value]`` pairs as the tuple of pairs gRPC hands an application."""
    return tuple((str(key), value) for key, value in pairs or ())
