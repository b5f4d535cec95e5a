"""The pivot: which calls go native and which are translated through chat completions."""

from __future__ import annotations

from gateway.models import Version
from gateway.pivot import chat_view, upstream_body

V1 = Version(name="v1", provider="p", model="model-a", system_prompt="You are v1.")
CHAT = {"model": "support-bot", "messages": [{"role": "user", "content": "Hi"}]}


def test_a_chat_call_to_a_chat_completions_provider_is_native_and_injected() -> None:
    prepared = upstream_body("chat", V1, CHAT, stream=False, wire="chat_completions")
    assert prepared.native
    assert prepared.body["messages"] == [{"role": "system", "content": "You are v1."},
                                         {"role": "user", "content": "Hi"}]
    assert prepared.body["model"] == "model-a"


def test_a_chat_call_to_another_wire_takes_the_pivot() -> None:
    for wire in ("responses", "messages"):
        prepared = upstream_body("chat", V1, CHAT, stream=True, wire=wire)
        assert not prepared.native
        assert prepared.body["stream_options"] == {"include_usage": True}


def test_the_chat_view_of_a_pivot_body_is_the_body() -> None:
    body = upstream_body("chat", V1, CHAT, stream=False, wire="messages").body
    assert chat_view("chat", body, native=False) is body
