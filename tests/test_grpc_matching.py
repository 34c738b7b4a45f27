"""gRPC call data without a server: the message form, which values are secrets, and which calls match."""

from __future__ import annotations

from typing import Any

from _grpc_echo import generated

from timetracer_otel._grpc_messages import message_entry, message_from
from timetracer_otel.cassette.calls import CassetteCall, call_document
from timetracer_otel.cassette.values import decode_value, encode_value
from timetracer_otel.cli.call_views import call_view
from timetracer_otel.cli.labels import call_label
from timetracer_otel.protocols.grpc import call_request, call_response, live_view, recorded_view
from timetracer_otel.redaction import Redactor

generated()
import echo_pb2  # noqa: E402 - importable once generated

R = "[REDACTED]"
SAY = "/ttecho.Echo/Say"


def _request(text: str, **fields: Any) -> Any:
    return echo_pb2.EchoRequest(text=text, **fields)


def _live(text: str, metadata: list[list[Any]], **fields: Any) -> dict[str, Any]:
    return call_request(SAY, metadata, [message_entry(_request(text, **fields), None)])


def _recorded(request: dict[str, Any], response: dict[str, Any] | None = None) -> CassetteCall:
    """``request`` as the cassette writer leaves it: encoded, its secrets hidden."""
    document = call_document("grpc", encode_value(request), encode_value(response))
    Redactor().document({"calls": [document]})
    return CassetteCall(document)


def test_a_message_is_its_type_and_json_and_comes_back_equal() -> None:
    message = _request("hi", count=2**40, tags={"a": "b"})
    entry = message_entry(message, None)
    assert entry == {
        "type": "ttecho.EchoRequest",
        "json": {"text": "hi", "count": str(2**40), "tags": {"a": "b"}},
    }
    assert message_from(decode_value(encode_value(entry)), None) == message


def test_a_message_with_undeclared_fields_keeps_its_bytes_and_comes_back_exactly() -> None:
    # field 15 is not declared by EchoRequest: JSON drops it, so the bytes are kept
    data = _request("hi").SerializeToString() + b"\x78\x07"
    message = echo_pb2.EchoRequest.FromString(data)
    entry = message_entry(message, None)
    assert entry["bytes"] == data
    rebuilt = message_from(entry, echo_pb2.EchoRequest.FromString)
    assert rebuilt.SerializeToString() == data


def test_a_live_call_and_its_recording_match_whatever_changes_per_run() -> None:
    metadata = [["x-tenant", "acme"], ["authorization", "Bearer s3cret"]]
    recorded = _recorded(_live("hi", [*metadata, ["traceparent", "00-aa-01"]], api_token="tok-1"))
    live = _live(
        "hi", [["traceparent", "00-bb-01"], ["user-agent", "x"], *metadata[::-1]], api_token="tok-1"
    )
    assert live_view(live, Redactor()).key == recorded_view(recorded).key
    assert recorded_view(recorded).label.startswith(f"{SAY} ")


def test_the_method_messages_and_metadata_are_part_of_the_signature() -> None:
    base = recorded_view(_recorded(_live("hi", [["x-tenant", "acme"]])))
    for changed in (
        _live("ho", [["x-tenant", "acme"]]),
        _live("hi", [["x-tenant", "other"]]),
        _live("hi", []),
        {**_live("hi", [["x-tenant", "acme"]]), "method": "/ttecho.Echo/Join"},
    ):
        assert live_view(changed, Redactor()).key != base.key


def test_secret_metadata_and_fields_are_hidden_in_requests_and_responses() -> None:
    reply = echo_pb2.EchoReply(text="t", session_token="srv-tok")
    response = call_response(
        "OK", "", [["set-cookie", "c=1"]], [["retry-token", "r"], ["why", "w"]],
        [message_entry(reply, None)],
    )  # fmt: skip
    call = _recorded(
        _live("hi", [["authorization", "Bearer s"], ["x-api-token", "t"], ["x-tenant", "a"]],
              api_token="tok-1"),
        response,
    )  # fmt: skip
    request, answer = call.decoded_request(), call.decoded_response()
    assert request["metadata"] == [["authorization", R], ["x-api-token", R], ["x-tenant", "a"]]
    assert request["messages"][0]["json"]["api_token"] == R
    assert answer["initial_metadata"] == [["set-cookie", R]]
    assert answer["trailing_metadata"] == [["retry-token", R], ["why", "w"]]
    assert answer["messages"][0]["json"] == {"text": "t", "session_token": R}


def test_a_message_with_a_hidden_field_has_its_bytes_hidden_too() -> None:
    data = _request("hi", api_token="tok-1").SerializeToString() + b"\x78\x07"
    entry = message_entry(echo_pb2.EchoRequest.FromString(data), None)
    call = _recorded(call_request(SAY, [], [entry]))
    (message,) = call.decoded_request()["messages"]
    assert message["bytes"] == R and message["json"]["api_token"] == R


def test_show_labels_a_call_by_its_method_and_status_and_lays_out_its_messages() -> None:
    response = call_response("NOT_FOUND", "gone", [], [], [])
    document = _recorded(_live("hi", [["x-tenant", "a"]]), response).document
    assert call_label(document) == f"grpc {SAY} NOT_FOUND"
    view = call_view(document)
    assert "'messages': [{'text': 'hi'}]" in view.request.text
    assert "'code': 'NOT_FOUND'" in view.response.text
