"""The gateway's copy of an answer is what the client saw, for every shape a client can receive.

Evaluators and the judge read the gateway's reassembly of an answer. For each
shape (text, tool calls only, a refusal, reasoning content, several choices)
the same answer is served plain and streamed by a scripted OpenAI-compatible
upstream (answers in openai-python's `chat_completion.py` /
`chat_completion_chunk.py` shapes), and the scores and the judge's view must
be the same both ways and right. The reassembly itself is checked against
openai-python's own stream accumulation (`ChatCompletionStreamState`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from gateway.providers.assembly import ChunkAssembly
from gateway.providers.openai import OpenAIStreamRelay
from tests.conftest import Gateway, query
from tests.fakes import FakeUpstream, ServerThread

WEATHER = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
TIME = {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}


def reply(content: str | None, *, refusal: str | None = None, tool_calls: list[dict[str, Any]] | None = None,
          reasoning: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": refusal}
    if tool_calls:
        message["tool_calls"] = tool_calls
    if reasoning:
        message["reasoning_content"] = reasoning
    return message


SHAPES: dict[str, list[tuple[dict[str, Any], str]]] = {
    "text": [(reply("Reset it under Settings, then Security."), "stop")],
    "tool calls only": [(reply(None, tool_calls=[WEATHER, TIME]), "tool_calls")],
    "text and a tool call": [(reply("Let me check.", tool_calls=[WEATHER]), "tool_calls")],
    "refusal": [(reply(None, refusal="I'm sorry, but I can't help with that."), "stop")],
    "reasoning content": [(reply("Paris.", reasoning="The capital of France is Paris."), "stop")],
    "several choices": [(reply("First answer."), "stop"), (reply("Second, longer answer."), "length")],
}


def completion(shape: str, model: str) -> dict[str, Any]:
    return {"id": "chatcmpl-shape", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": index, "message": message, "logprobs": None, "finish_reason": finish}
                        for index, (message, finish) in enumerate(SHAPES[shape])],
            "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}}


def chunks(shape: str, model: str) -> list[dict[str, Any]]:
    """The stream of `shape`: every string in two pieces, choices interleaved, as OpenAI streams them."""
    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": "chatcmpl-shape", "object": "chat.completion.chunk", "created": 1, "model": model,
                "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    def halves(text: str) -> list[str]:
        return [text[: len(text) // 2], text[len(text) // 2:]]

    per_choice: list[list[dict[str, Any]]] = []
    for index, (message, finish) in enumerate(SHAPES[shape]):
        events = [chunk(index, {"role": "assistant", "content": "" if message["content"] is not None else None,
                                "refusal": None})]
        for field in ("reasoning_content", "content", "refusal"):
            if message.get(field):
                events += [chunk(index, {field: piece}) for piece in halves(message[field])]
        for position, call in enumerate(message.get("tool_calls") or []):
            first, second = halves(call["function"]["arguments"])
            events.append(chunk(index, {"tool_calls": [{"index": position, "id": call["id"], "type": "function",
                                                        "function": {"name": call["function"]["name"],
                                                                     "arguments": first}}]}))
            events.append(chunk(index, {"tool_calls": [{"index": position, "function": {"arguments": second}}]}))
        events.append(chunk(index, {}, finish))
        per_choice.append(events)
    return [events[position] for position in range(max(map(len, per_choice))) for events in per_choice
            if position < len(events)]


def sdk_assembly(sent: list[dict[str, Any]]) -> list[dict[str, Any]]:
    state = ChatCompletionStreamState()
    for event in sent:
        state.handle_chunk(ChatCompletionChunk.model_validate(event))
    snapshot = state.current_completion_snapshot
    return [{"index": choice.index, "finish_reason": choice.finish_reason,
             "message": choice.message.model_dump(exclude_none=True, exclude={"parsed"})}
            for choice in snapshot.choices]


def comparable(choices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Choices with null fields left out and each tool call's stream `index` dropped, as the SDK does."""
    def clean(message: dict[str, Any]) -> dict[str, Any]:
        kept = {key: value for key, value in message.items() if value is not None}
        if "tool_calls" in kept:
            kept["tool_calls"] = [{key: value for key, value in call.items() if key != "index"}
                                  for call in kept["tool_calls"]]
        return kept

    return [{"index": choice["index"], "finish_reason": choice["finish_reason"], "message": clean(choice["message"])}
            for choice in choices]


@pytest.mark.parametrize("shape", list(SHAPES))
def test_the_reassembly_is_what_openai_python_builds_and_equals_the_plain_answer(shape: str) -> None:
    sent = chunks(shape, "m")
    assembly = ChunkAssembly()
    for event in sent:
        assembly.add(event)
    assert comparable(assembly.choices()) == comparable(sdk_assembly(sent))
    plain = completion(shape, "m")["choices"]
    assert comparable(assembly.choices()) == comparable(
        [{key: choice[key] for key in ("index", "finish_reason", "message")} for choice in plain])


@pytest.mark.parametrize("shape", list(SHAPES))
def test_the_relay_reassembles_what_it_relayed(shape: str) -> None:
    relay = OpenAIStreamRelay(wants_usage=False, collect=True)
    raw = b"".join(b"data: " + json.dumps(event).encode() + b"\n\n" for event in chunks(shape, "m"))
    out = b"".join(relay.feed(raw[start:start + 13]) for start in range(0, len(raw), 13)) + relay.feed(
        b"data: [DONE]\n\n") + relay.finish()
    seen = [json.loads(line[6:]) for line in out.decode().split("\n\n") if line.startswith("data: {")]
    assert comparable(relay.choices or []) == comparable(sdk_assembly(seen))


# -- end to end: the scores and the judge's view, plain and streamed -------------------------------


class ScriptedUpstream:
    """An OpenAI-compatible upstream that answers the shape named in the call's `metadata.shape`."""

    def __init__(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._server = ServerThread(app)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.port}/v1"

    def start(self) -> ScriptedUpstream:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        shape = body["metadata"]["shape"]
        if not body.get("stream"):
            return web.json_response(completion(shape, body["model"]))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in chunks(shape, body["model"]):
            await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedUpstream]:
    server = ScriptedUpstream().start()
    yield server
    server.stop()


@pytest.fixture
def judge() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    fake.behaviour.judge_scores = {"": 0.75}
    yield fake
    fake.stop()


def test_scores_and_the_judges_view_are_the_same_plain_and_streamed(
    make_gateway: Any, scripted: ScriptedUpstream, judge: FakeUpstream
) -> None:
    gateway: Gateway = make_gateway({
        "providers": {"scripted": {"kind": "openai", "base_url": scripted.url, "retries": 0},
                      "judge": {"kind": "openai", "base_url": judge.url, "retries": 0}},
        "deployments": {"support-bot": {
            "versions": {"v1": {"provider": "scripted"}, "v2": {"provider": "scripted"}},
            "quality": {"sample_rate": 1.0,
                        "evaluators": [{"type": "non_empty"}, {"type": "refusal"}],
                        "judge": {"provider": "judge", "model": "judge-model", "sample_rate": 1.0,
                                  "max_per_minute": 100_000}}}},
    })
    ids: dict[tuple[str, bool], str] = {}
    with gateway.client() as http:
        for shape in SHAPES:
            for stream in (False, True):
                answer = http.post("/v1/chat/completions", json={
                    "model": "support-bot", "user": "u1", "stream": stream, "metadata": {"shape": shape},
                    "messages": [{"role": "user", "content": f"question about {shape}"}]})
                assert answer.status_code == 200
                answer.read()
                ids[shape, stream] = answer.headers["x-request-id"]

    def scores() -> dict[str, dict[str, float]]:
        rows = query(gateway.settings.database_url, "SELECT request_id, source, score FROM quality_scores")
        found: dict[str, dict[str, float]] = {}
        for row in rows:
            found.setdefault(row["request_id"], {})[row["source"]] = row["score"]
        return found

    deadline = time.monotonic() + 15
    while not all(len(scores().get(request_id, {})) == 3 for request_id in ids.values()):
        assert time.monotonic() < deadline, "the evaluations did not finish"
        time.sleep(0.1)
    found = scores()
    expected = {"text": (1.0, 1.0), "tool calls only": (1.0, 1.0), "text and a tool call": (1.0, 1.0),
                "refusal": (1.0, 0.0), "reasoning content": (1.0, 1.0), "several choices": (1.0, 1.0)}
    for shape, (non_empty, refusal) in expected.items():
        for stream in (False, True):
            assert found[ids[shape, stream]] == {"evaluator:non_empty": non_empty, "evaluator:refusal": refusal,
                                                 "judge": 0.75}, (shape, stream)

    judged: dict[str, list[str]] = {}
    for received in judge.received:
        text = received.body["messages"][-1]["content"]
        shape = text.split("question about ", 1)[1].split("\n", 1)[0]
        judged.setdefault(shape, []).append(text.split("<answer>\n", 1)[1].split("\n</answer>", 1)[0])
    assert judged == {
        "text": ["Reset it under Settings, then Security."] * 2,
        "tool calls only": ['[tool call] get_weather({"city": "Paris"})\n[tool call] get_time({})'] * 2,
        "text and a tool call": ['Let me check.\n[tool call] get_weather({"city": "Paris"})'] * 2,
        "refusal": ["[refusal] I'm sorry, but I can't help with that."] * 2,
        "reasoning content": ["Paris."] * 2,
        "several choices": ["First answer."] * 2,
    }
