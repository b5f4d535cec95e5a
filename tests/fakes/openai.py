"""A strict fake OpenAI API: chat completions, Responses, embeddings, models, completions, moderations.

A real HTTP server on 127.0.0.1 that records what it received and can
misbehave on demand (error statuses and rate-limit headers, delays, hangs,
redirects, HTML or truncated bodies, slow or cut streams, CRLF line endings,
gzipped streams, an error inside an HTTP 200, refusing `stream_options`).

Requests are checked the way the real API checks them, and refused with
OpenAI's error shape `{"error": {"message", "type", "param", "code"}}`:

- `POST /v1/chat/completions`: the fields of `CompletionCreateParams`
  (openai-python `src/openai/types/chat/completion_create_params.py`) and no
  others ("Unrecognized request argument supplied"); message, content part,
  tool and tool_choice shapes from `chat_completion_*_param.py`; `model` and a
  non-empty `messages` required; `stream_options` only with `stream`;
  `tool_choice` and `parallel_tool_calls` only with `tools`; on reasoning models
  (`o1`, `o3`, `o4-mini`, `gpt-5`...) no `max_tokens` and sampling parameters at
  their defaults only; every assistant
  `tool_calls` answered by `tool` messages and every `tool` message answering
  one; `temperature` in [0, 2], `top_p` in [0, 1], penalties in [-2, 2], `n` ≥ 1.
- `POST /v1/responses`: the fields of `ResponseCreateParams`
  (`src/openai/types/responses/response_create_params.py`) and no others
  ("Unknown parameter"); input item shapes from `response_input_param.py`,
  `easy_input_message_param.py`, `response_input_*_param.py`,
  `response_function_tool_call_param.py`, `response_reasoning_item_param.py`;
  function tools from `function_tool_param.py` (`strict`, `parameters` and
  an image's `detail` are optional, as the API documents defaults for them);
  `function_call_output` items must answer a `function_call` in the input.
- `POST /v1/embeddings`, `GET /v1/models/{id}`, `POST /v1/completions`,
  `POST /v1/moderations`: their params types' fields only.

Answers have the SDK models' shapes (`ChatCompletion`, `ChatCompletionChunk`,
`Response` with the `ResponseStreamEvent` sequence, `CreateEmbeddingResponse`,
`Model`): text "answer to [<system prompt>]" (the first system/developer
message, or `instructions`), or a judge's verdict (`Behaviour.judge_scores`,
`judge_text`; pairwise: `Behaviour.prefer`), a call to every offered function tool (only the
first with `parallel_tool_calls: false`) whose arguments are a sample of its
parameters' schema, and JSON matching a requested `json_schema` format.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import random
import re
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.schema import (
    Check,
    Invalid,
    anything,
    array,
    boolean,
    either,
    integer,
    literal,
    mapping,
    nullable,
    number,
    obj,
    string,
    tagged,
)
from tests.fakes.server import MAX_BODY, Received, ServerThread, sample

# -- chat completions request (completion_create_params.py and chat_completion_*_param.py) -------------

CACHE_BREAKPOINT = {"prompt_cache_breakpoint": obj({"mode": literal("explicit")})}
TEXT_PART = obj({"type": literal("text"), "text": string()}, CACHE_BREAKPOINT)
IMAGE_PART = obj({"type": literal("image_url"), "image_url": obj({"url": string()}, {
    "detail": literal("auto", "low", "high")})}, CACHE_BREAKPOINT)
AUDIO_PART = obj({"type": literal("input_audio"), "input_audio": obj({"data": string(),
                                                                      "format": literal("wav", "mp3")})})
FILE_PART = obj({"type": literal("file"), "file": obj(None, {"file_data": string(), "file_id": string(),
                                                             "filename": string()})})
REFUSAL_PART = obj({"type": literal("refusal"), "refusal": string()})
TEXT_CONTENT = either(string(), array(TEXT_PART))
TOOL_CALL = tagged({
    "function": obj({"id": string(), "type": literal("function"),
                     "function": obj({"name": string(), "arguments": string()})}),
    "custom": obj({"id": string(), "type": literal("custom"), "custom": obj({"name": string(), "input": string()})}),
})
CHAT_MESSAGE = tagged({
    "system": obj({"role": literal("system"), "content": TEXT_CONTENT}, {"name": string()}),
    "developer": obj({"role": literal("developer"), "content": TEXT_CONTENT}, {"name": string()}),
    "user": obj({"role": literal("user"), "content": either(string(), array(tagged({
        "text": TEXT_PART, "image_url": IMAGE_PART, "input_audio": AUDIO_PART, "file": FILE_PART})))},
        {"name": string()}),
    "assistant": obj({"role": literal("assistant")}, {
        "content": nullable(either(string(), array(tagged({"text": TEXT_PART, "refusal": REFUSAL_PART})))),
        "audio": nullable(obj({"id": string()})), "name": string(), "refusal": nullable(string()),
        "function_call": nullable(obj({"name": string(), "arguments": string()})),
        "tool_calls": array(TOOL_CALL)}),
    "tool": obj({"role": literal("tool"), "content": TEXT_CONTENT, "tool_call_id": string()}),
    "function": obj({"role": literal("function"), "content": nullable(string()), "name": string()}),
}, key="role")
FUNCTION = obj({"name": string()}, {"description": string(), "parameters": mapping(),
                                    "strict": nullable(boolean)})
CHAT_TOOL = tagged({
    "function": obj({"type": literal("function"), "function": FUNCTION}),
    "custom": obj({"type": literal("custom"), "custom": obj({"name": string()}, {
        "description": string(), "format": mapping()})}),
})
CHAT_TOOL_CHOICE = either(
    literal("none", "auto", "required"),
    tagged({
        "function": obj({"type": literal("function"), "function": obj({"name": string()})}),
        "custom": obj({"type": literal("custom"), "custom": obj({"name": string()})}),
        "allowed_tools": obj({"type": literal("allowed_tools"), "allowed_tools": obj({
            "mode": literal("auto", "required"), "tools": array(mapping())})}),
    }),
)
JSON_SCHEMA = obj({"name": string()}, {"description": string(), "schema": mapping(), "strict": nullable(boolean)})
RESPONSE_FORMAT = tagged({
    "text": obj({"type": literal("text")}),
    "json_object": obj({"type": literal("json_object")}),
    "json_schema": obj({"type": literal("json_schema"), "json_schema": JSON_SCHEMA}),
})
REASONING_EFFORT = nullable(literal("none", "minimal", "low", "medium", "high", "xhigh", "max"))
SERVICE_TIER = nullable(literal("auto", "default", "flex", "scale", "priority", "fast"))
PROMPT_CACHE_OPTIONS = obj(None, {"mode": literal("implicit", "explicit"), "ttl": literal("30m")})
MODERATION = obj({"model": string()}, {"policy": anything})
PENALTY = nullable(number(minimum=-2, maximum=2))
CHAT = obj({"model": string(), "messages": array(CHAT_MESSAGE, min_items=1)}, {
    "audio": nullable(obj({"format": string(), "voice": anything})), "frequency_penalty": PENALTY,
    "function_call": anything, "functions": array(FUNCTION), "logit_bias": nullable(mapping(integer())),
    "logprobs": nullable(boolean), "max_completion_tokens": nullable(integer(minimum=1)),
    "max_tokens": nullable(integer(minimum=1)), "metadata": nullable(mapping(string())),
    "modalities": nullable(array(literal("text", "audio"))), "moderation": nullable(MODERATION),
    "n": nullable(integer(minimum=1, maximum=128)),
    "parallel_tool_calls": boolean, "prediction": nullable(obj({"type": literal("content"), "content": anything})),
    "presence_penalty": PENALTY, "prompt_cache_key": nullable(string()),
    "prompt_cache_options": PROMPT_CACHE_OPTIONS, "prompt_cache_retention": nullable(literal("in_memory", "24h")),
    "reasoning_effort": REASONING_EFFORT, "response_format": RESPONSE_FORMAT,
    "safety_identifier": nullable(string()), "seed": nullable(integer()), "service_tier": SERVICE_TIER,
    "stop": nullable(either(string(), array(string(), max_items=4))), "store": nullable(boolean),
    "stream": nullable(boolean),
    "stream_options": nullable(obj(None, {"include_obfuscation": boolean, "include_usage": boolean})),
    "temperature": nullable(number(minimum=0, maximum=2)), "tool_choice": CHAT_TOOL_CHOICE,
    "tools": array(CHAT_TOOL), "top_logprobs": nullable(integer(minimum=0, maximum=20)),
    "top_p": nullable(number(minimum=0, maximum=1)), "user": string(),
    "verbosity": nullable(literal("low", "medium", "high")), "web_search_options": mapping(),
})

# -- Responses request (response_create_params.py and the input item params) -----------------------------

INPUT_TEXT = obj({"type": literal("input_text"), "text": string()}, CACHE_BREAKPOINT)
INPUT_IMAGE = obj({"type": literal("input_image")}, {
    **CACHE_BREAKPOINT, "detail": literal("low", "high", "auto", "original"), "file_id": nullable(string()),
    "image_url": nullable(string())})
INPUT_FILE = obj({"type": literal("input_file")}, {
    **CACHE_BREAKPOINT, "detail": literal("auto", "low", "high"), "file_data": string(),
    "file_id": nullable(string()), "file_url": string(), "filename": string()})
INPUT_CONTENT = tagged({"input_text": INPUT_TEXT, "input_image": INPUT_IMAGE, "input_file": INPUT_FILE})
OUTPUT_TEXT = obj({"type": literal("output_text"), "text": string()}, {
    "annotations": array(mapping()), "logprobs": array(mapping())})
OUTPUT_CONTENT = tagged({"output_text": OUTPUT_TEXT, "refusal": REFUSAL_PART, "input_text": INPUT_TEXT})
STATUS = literal("in_progress", "completed", "incomplete")
PHASE = {"phase": nullable(literal("commentary", "final_answer"))}


def _message_item(value: Any, path: tuple[str | int, ...]) -> None:
    """EasyInputMessageParam, Message or ResponseOutputMessageParam, told apart by role."""
    if isinstance(value, dict) and value.get("role") == "assistant":
        obj({"role": literal("assistant"), "content": either(string(), array(OUTPUT_CONTENT))},
            {"type": literal("message"), "id": string(), "status": STATUS, **PHASE})(value, path)
    else:
        obj({"role": literal("user", "system", "developer"), "content": either(string(), array(INPUT_CONTENT))},
            {"type": literal("message"), "status": STATUS, **PHASE})(value, path)


FUNCTION_CALL_ITEM = obj({"type": literal("function_call"), "call_id": string(), "name": string(),
                          "arguments": string()},
                         {"id": string(), "caller": nullable(mapping()), "namespace": string(), "status": STATUS})
FUNCTION_CALL_OUTPUT_ITEM = obj({"type": literal("function_call_output"), "call_id": string(),
                                 "output": either(string(), array(INPUT_CONTENT))},
                                {"id": nullable(string()), "caller": nullable(mapping()), "name": nullable(string()),
                                 "namespace": nullable(string()), "status": nullable(STATUS)})
REASONING_ITEM = obj({"type": literal("reasoning"), "id": string(),
                      "summary": array(obj({"type": literal("summary_text"), "text": string()}))},
                     {"content": array(obj({"type": literal("reasoning_text"), "text": string()})),
                      "encrypted_content": nullable(string()), "status": STATUS})
ITEM_REFERENCE = obj({"id": string()}, {"type": nullable(literal("item_reference"))})
# Item types of ResponseInputItemParam that belong to OpenAI's built-in tools: checked by tag only.
BUILT_IN_ITEMS = (
    "file_search_call", "computer_call", "computer_call_output", "web_search_call", "tool_search_call",
    "tool_search_output", "additional_tools", "compaction", "image_generation_call", "code_interpreter_call",
    "local_shell_call", "local_shell_call_output", "shell_call", "shell_call_output", "apply_patch_call",
    "apply_patch_call_output", "mcp_list_tools", "mcp_approval_request", "mcp_approval_response", "mcp_call",
    "custom_tool_call_output", "custom_tool_call", "compaction_trigger", "program", "program_output",
)
INPUT_ITEM = tagged({"message": _message_item, "function_call": FUNCTION_CALL_ITEM,
                     "function_call_output": FUNCTION_CALL_OUTPUT_ITEM, "reasoning": REASONING_ITEM,
                     "item_reference": ITEM_REFERENCE}, default="message", loose=BUILT_IN_ITEMS)
FUNCTION_TOOL = obj({"type": literal("function"), "name": string()}, {
    "parameters": nullable(mapping()), "strict": nullable(boolean), "description": nullable(string()),
    "allowed_callers": nullable(array(literal("direct", "programmatic"))), "defer_loading": boolean,
    "output_schema": nullable(mapping())})
BUILT_IN_TOOLS = (
    "file_search", "computer", "computer_use_preview", "web_search", "web_search_2025_08_26", "mcp",
    "code_interpreter", "programmatic_tool_calling", "image_generation", "local_shell", "shell", "custom",
    "namespace", "tool_search", "web_search_preview", "web_search_preview_2025_03_11", "apply_patch",
)
RESPONSES_TOOL = tagged({"function": FUNCTION_TOOL}, loose=BUILT_IN_TOOLS)
RESPONSES_TOOL_CHOICE = either(
    literal("none", "auto", "required"),
    tagged({"function": obj({"type": literal("function"), "name": string()}),
            "allowed_tools": obj({"type": literal("allowed_tools"), "mode": literal("auto", "required"),
                                  "tools": array(mapping())}),
            "custom": obj({"type": literal("custom"), "name": string()}),
            "mcp": obj({"type": literal("mcp"), "server_label": string()}, {"name": nullable(string())})},
           loose=("file_search", "web_search_preview", "computer_use_preview", "web_search_preview_2025_03_11",
                  "image_generation", "code_interpreter", "programmatic_tool_calling", "apply_patch", "shell")),
)
TEXT_FORMAT = tagged({
    "text": obj({"type": literal("text")}),
    "json_object": obj({"type": literal("json_object")}),
    "json_schema": obj({"type": literal("json_schema"), "name": string(), "schema": mapping()},
                       {"description": string(), "strict": nullable(boolean)}),
})
INCLUDABLE = literal("file_search_call.results", "web_search_call.results", "web_search_call.action.sources",
                     "message.input_image.image_url", "computer_call_output.output.image_url",
                     "code_interpreter_call.outputs", "reasoning.encrypted_content", "message.output_text.logprobs")
RESPONSES = obj({"model": string()}, {
    "access_programs": obj(None, {"cyber": literal("standard", "daybreak_blue", "daybreak_red")}),
    "background_options": obj(None, {"completion_window": literal("soonest", "2h", "8h"),
                                     "continuation_id": string()}),
    "image": obj(None, {"context_compression": literal("auto", "enabled", "disabled")}),
    "background": nullable(boolean), "context_management": nullable(array(mapping())),
    "conversation": nullable(either(string(), obj({"id": string()}))), "include": nullable(array(INCLUDABLE)),
    "input": either(string(), array(INPUT_ITEM)), "instructions": nullable(string()),
    "max_output_tokens": nullable(integer(minimum=16)), "max_tool_calls": nullable(integer(minimum=1)),
    "metadata": nullable(mapping(string())), "moderation": nullable(MODERATION),
    "parallel_tool_calls": nullable(boolean), "previous_response_id": nullable(string()),
    "prompt": nullable(obj({"id": string()}, {"variables": nullable(mapping()), "version": nullable(string())})),
    "prompt_cache_key": nullable(string()), "prompt_cache_options": PROMPT_CACHE_OPTIONS,
    "prompt_cache_retention": nullable(literal("in_memory", "24h")),
    "reasoning": nullable(obj(None, {
        "context": nullable(literal("auto", "current_turn", "all_turns")), "effort": REASONING_EFFORT,
        "generate_summary": nullable(literal("auto", "concise", "detailed")), "mode": string(),
        "summary": nullable(literal("auto", "concise", "detailed"))})),
    "safety_identifier": nullable(string()), "service_tier": SERVICE_TIER, "store": nullable(boolean),
    "stream": nullable(boolean), "stream_options": nullable(obj(None, {"include_obfuscation": boolean})),
    "temperature": nullable(number(minimum=0, maximum=2)),
    "text": obj(None, {"format": TEXT_FORMAT, "verbosity": nullable(literal("low", "medium", "high"))}),
    "tool_choice": RESPONSES_TOOL_CHOICE, "tools": array(RESPONSES_TOOL),
    "top_logprobs": nullable(integer(minimum=0, maximum=20)), "top_p": nullable(number(minimum=0, maximum=1)),
    "truncation": nullable(literal("auto", "disabled")), "user": string(),
})

# -- the rest (embedding_create_params.py, completion_create_params.py, moderation_create_params.py) -------

EMBEDDINGS = obj({"model": string(), "input": either(string(), array(string(), min_items=1),
                                                     array(integer(), min_items=1),
                                                     array(array(integer()), min_items=1))},
                 {"dimensions": integer(minimum=1), "encoding_format": literal("float", "base64"), "user": string()})
COMPLETIONS = obj({"model": string(), "prompt": nullable(either(string(), array(string()), array(integer()),
                                                                array(array(integer()))))}, {
    "best_of": nullable(integer()), "echo": nullable(boolean), "frequency_penalty": PENALTY,
    "logit_bias": nullable(mapping(integer())), "logprobs": nullable(integer()), "max_tokens": nullable(integer()),
    "n": nullable(integer()), "presence_penalty": PENALTY, "seed": nullable(integer()),
    "stop": nullable(either(string(), array(string()))), "stream": nullable(boolean),
    "stream_options": nullable(mapping()), "suffix": nullable(string()), "temperature": nullable(number()),
    "top_p": nullable(number()), "user": string()})
MODERATIONS = obj({"input": either(string(), array(string()), array(mapping()))}, {"model": string()})


class Refused(Exception):
    """A request the real API would refuse: HTTP status and OpenAI's error object."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 status: int = 400, error_type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.error = {"message": message, "type": error_type, "param": param, "code": code}


def _refusal(error: Invalid, *, top_level_extra: str) -> Refused:
    where = error.bracketed()
    if error.kind == "extra":
        if len(error.path) == 1 and top_level_extra == "chat":
            return Refused(f"Unrecognized request argument supplied: {error.path[0]}")
        return Refused(f"Unknown parameter: '{where}'.", param=where, code="unknown_parameter")
    if error.kind == "missing":
        return Refused(f"Missing required parameter: '{where}'.", param=where, code="missing_required_parameter")
    if error.kind == "type":
        return Refused(f"Invalid type for '{where}': {error.detail}.", param=where, code="invalid_type")
    return Refused(f"Invalid value for '{where}': {error.detail}.", param=where, code="invalid_value")


def validate_chat(body: Any) -> None:
    """Raise `Refused` for what the real chat completions endpoint would refuse."""
    try:
        CHAT(body, ())
    except Invalid as error:
        raise _refusal(error, top_level_extra="chat") from None
    if body.get("stream_options") is not None and not body.get("stream"):
        raise Refused("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                      param="stream_options")
    for name in ("tool_choice", "parallel_tool_calls"):
        if name in body and not body.get("tools"):
            raise Refused(f"Invalid value for '{name}': '{name}' is only allowed when 'tools' are specified.",
                          param=name)
    _check_reasoning_model(body)
    pending: list[str] = []
    for index, message in enumerate(body["messages"]):
        if message["role"] == "tool":
            if message["tool_call_id"] not in pending:
                raise Refused("Invalid parameter: messages with role 'tool' must be a response to a preceeding "
                              "message with 'tool_calls'.", param=f"messages.[{index}].role")
            pending.remove(message["tool_call_id"])
            continue
        if pending:
            raise Refused("An assistant message with 'tool_calls' must be followed by tool messages responding to "
                          f"each 'tool_call_id'. The following tool_call_ids did not have response messages: "
                          f"{', '.join(pending)}", param=f"messages.[{index}].role")
        if message["role"] == "assistant":
            if message.get("content") is None and not message.get("tool_calls") and not message.get("function_call"):
                raise Refused(f"Invalid value for 'messages[{index}].content': expected a string, got null.",
                              param=f"messages.[{index}].content")
            pending = [call["id"] for call in message.get("tool_calls") or []]


REASONING_MODEL = re.compile(r"^(o\d|gpt-5)")
# Sampling parameters a reasoning model takes only at their default value.
REASONING_DEFAULTS = {"temperature": 1, "top_p": 1, "presence_penalty": 0, "frequency_penalty": 0}


def _check_reasoning_model(body: dict[str, Any]) -> None:
    """What OpenAI's reasoning models (o1, o3, o4-mini, gpt-5...) refuse that the others take."""
    if not REASONING_MODEL.match(body["model"]):
        return
    if body.get("max_tokens") is not None:
        raise Refused("Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                      "'max_completion_tokens' instead.", param="max_tokens", code="unsupported_parameter")
    for name, default in REASONING_DEFAULTS.items():
        if body.get(name) is not None and body[name] != default:
            raise Refused(f"Unsupported value: '{name}' does not support {body[name]} with this model. Only the "
                          f"default ({default}) value is supported.", param=name, code="unsupported_value")
    if body.get("logprobs"):
        raise Refused("Unsupported parameter: 'logprobs' is not supported with this model.", param="logprobs",
                      code="unsupported_parameter")


def validate_responses(body: Any) -> None:
    """Raise `Refused` for what the real Responses endpoint would refuse."""
    try:
        RESPONSES(body, ())
    except Invalid as error:
        raise _refusal(error, top_level_extra="responses") from None
    items = body.get("input") if isinstance(body.get("input"), list) else []
    calls: set[str] = set()
    for index, item in enumerate(items):
        kind = item.get("type", "message")
        if kind == "function_call":
            calls.add(item["call_id"])
        elif kind == "function_call_output" and item["call_id"] not in calls and not body.get("previous_response_id"):
            raise Refused(f"No tool call found for function call output with call_id {item['call_id']}.",
                          param=f"input[{index}]")
    if body.get("tool_choice") is not None and body.get("tool_choice") != "auto" and not body.get("tools"):
        raise Refused("Tool choice requires tools.", param="tool_choice")


def _validate(shape: Check, body: Any) -> None:
    try:
        shape(body, ())
    except Invalid as error:
        raise _refusal(error, top_level_extra="responses") from None


@dataclass
class Behaviour:
    """What the next calls get; tests set fields before calling the gateway."""

    status: int = 200
    error_body: str | None = None
    retry_after: str | None = None
    # "ok", "html", "truncated", "no_usage", "bad_usage", "redirect", "hang"
    mode: str = "ok"
    delay: float = 0.0
    fail_first: int = 0
    chunk_delay: float = 0.0
    # A stream's headers go out at once; its first event after this long.
    first_chunk_delay: float = 0.0
    # Per call, by the body's `user`: `delay` and `chunk_delay` for that user's calls.
    delays: dict[str, float] = field(default_factory=dict)
    chunk_delays: dict[str, float] = field(default_factory=dict)
    chunk_counts: dict[str, int] = field(default_factory=dict)
    chunks: int = 3
    cut_after: int | None = None
    crlf: bool = False
    usage_in_last_chunk: bool = False
    # Upstream models that answer `status` (default 500) while others answer normally.
    fail_models: frozenset[str] = frozenset()
    # Upstream models that fail this share of calls at random (HTTP 500).
    error_rates: dict[str, float] = field(default_factory=dict)
    # Upstream models whose answers are empty.
    empty_models: frozenset[str] = frozenset()
    # Judge mode: the answer is a verdict; the first key found in the judged text picks the score.
    judge_scores: dict[str, float] | None = None
    judge_text: str | None = None  # a verdict to send verbatim instead
    # Pairwise judge mode (a prompt with <answer_a> and <answer_b>): {"winner": ...} prefers the answer
    # containing this text ("tie" when both or neither do).
    prefer: str | None = None
    # Headers added to error answers (rate-limit headers: retry-after-ms, x-ratelimit-*).
    error_headers: dict[str, str] = field(default_factory=dict)
    # Seconds a stream's connection stays open after its [DONE] event (the chunked body's end comes later).
    linger_after_done: float = 0.0
    # An OpenAI-compatible upstream that refuses `stream_options` (400), as some do.
    refuse_stream_options: bool = False
    # Gzip every answer, streams included, whatever Accept-Encoding asked for.
    gzip: bool = False
    # OpenRouter style: answer HTTP 200 whose body is this error object.
    error_in_200: dict[str, Any] | None = None


@dataclass
class FakeUpstream:
    """The fake OpenAI API on 127.0.0.1; `received` holds every call, valid or not, in order."""

    behaviour: Behaviour = field(default_factory=Behaviour)
    received: list[Received] = field(default_factory=list)
    # When the last streamed chunk (or the [DONE] event) was written, per call.
    stream_finished_at: list[float] = field(default_factory=list)
    # When a stream's reader went away before its end (the write failed), per call.
    streams_cut: list[float] = field(default_factory=list)
    # The requests the fake refused, as (status, error body), in order.
    refused: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/moderations", self._moderations)
        app.router.add_get("/v1/models/{model}", self._model)
        self._server = ServerThread(app)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.port}/v1"

    @property
    def hits(self) -> int:
        return len(self.received)

    def start(self) -> FakeUpstream:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def reset(self) -> None:
        self.behaviour = Behaviour()
        self.received.clear()
        self.stream_finished_at.clear()
        self.streams_cut.clear()
        self.refused.clear()

    def _refuse(self, refused: Refused) -> web.Response:
        body = {"error": refused.error}
        self.refused.append((refused.status, body))
        return web.json_response(body, status=refused.status)

    async def _record(self, request: web.Request) -> Any:
        try:
            body = await request.json() if request.method == "POST" else None
        except ValueError:
            body = None
        self.received.append(Received(request.path, dict(request.headers), body, time.monotonic()))
        return body

    async def _misbehave(self, body: Any) -> web.StreamResponse | None:
        """The configured failure for this call, if any (errors, hangs, redirects, broken bodies)."""
        b = self.behaviour
        delay = b.delays.get(str(body.get("user")), b.delay)
        if delay:
            await asyncio.sleep(delay)
        if b.mode == "hang":
            await asyncio.sleep(3600)
        if b.mode == "redirect":
            return web.Response(status=302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})
        failing = b.status >= 400 and (b.fail_first == 0 or len(self.received) <= b.fail_first)
        random_failure = random.random() < b.error_rates.get(body.get("model", ""), 0.0)
        if failing or body.get("model") in b.fail_models or random_failure:
            status = b.status if b.status >= 400 else 500
            headers = {**({"Retry-After": b.retry_after} if b.retry_after else {}), **b.error_headers}
            text = b.error_body or json.dumps(
                {"error": {"message": f"fake failure {status}", "type": "server_error", "param": None, "code": None}}
            )
            return web.Response(status=status, text=text, content_type="application/json", headers=headers)
        if b.mode == "html":
            return web.Response(text="<html><body>Bad gateway</body></html>", content_type="text/html")
        if b.mode == "truncated":
            return web.Response(text='{"id": "chatcmpl-1", "choices": [{"mes', content_type="application/json")
        if b.refuse_stream_options and "stream_options" in body:
            return web.json_response({"error": {"message": "Unrecognized request argument supplied: stream_options",
                                                "type": "invalid_request_error", "param": None, "code": None}},
                                     status=400)
        if b.error_in_200 is not None:
            return web.json_response({"error": b.error_in_200})
        return None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        try:
            if not isinstance(body, dict):
                raise Refused("We could not parse the JSON body of your request.")
            validate_chat(body)
        except Refused as refused:
            return self._refuse(refused)
        failure = await self._misbehave(body)
        if failure is not None:
            return failure
        if body.get("stream"):
            return await self._stream(request, body)
        answer = completion(body, usage=self._usage())
        if body.get("model") in self.behaviour.empty_models:
            answer["choices"][0]["message"]["content"] = ""
        if self.behaviour.judge_scores is not None or self.behaviour.judge_text is not None:
            answer["choices"][0]["message"]["content"] = self._verdict(body)
        elif self.behaviour.prefer is not None:
            answer["choices"][0]["message"]["content"] = self._preference(body)
        if self.behaviour.gzip:
            return web.Response(body=gzip.compress(json.dumps(answer).encode()),
                                headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
        return web.json_response(answer)

    def _verdict(self, body: dict[str, Any]) -> str:
        b = self.behaviour
        if b.judge_text is not None:
            return b.judge_text
        judged = body["messages"][-1]["content"]
        score = next((value for key, value in (b.judge_scores or {}).items() if key in judged), 0.0)
        return json.dumps({"score": score, "reason": "fake verdict"})

    def _preference(self, body: dict[str, Any]) -> str:
        prompt = str(body["messages"][-1]["content"])
        first = prompt.partition("<answer_a>")[2].partition("</answer_a>")[0]
        second = prompt.partition("<answer_b>")[2].partition("</answer_b>")[0]
        wanted = self.behaviour.prefer or ""
        winner = "tie" if (wanted in first) == (wanted in second) else "A" if wanted in first else "B"
        return json.dumps({"winner": winner, "reason": "fake pairwise verdict"})

    def _usage(self) -> Any:
        mode = self.behaviour.mode
        if mode == "no_usage":
            return None
        if mode == "bad_usage":
            return {"prompt_tokens": "many", "completion_tokens": -3}
        return {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}

    async def _stream(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        if self.behaviour.gzip:
            response.enable_compression(force=web.ContentCoding.gzip)
        await response.prepare(request)
        try:
            await self._write_stream(response, body)
        except (ConnectionError, asyncio.CancelledError):
            self.streams_cut.append(time.monotonic())
            raise
        return response

    async def _write_stream(self, response: web.StreamResponse, body: dict[str, Any]) -> None:
        b = self.behaviour
        if b.first_chunk_delay:
            await asyncio.sleep(b.first_chunk_delay)
        end = b"\r\n\r\n" if b.crlf else b"\n\n"
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        structured = _json_schema(body)
        count = b.chunk_counts.get(str(body.get("user")), b.chunks)
        pieces = [json.dumps(sample(structured))] if structured is not None else [f"piece{i} " for i in range(count)]
        chunk_delay = b.chunk_delays.get(str(body.get("user")), b.chunk_delay)
        calls = _called_tools(body)
        for index, piece in enumerate(pieces):
            if b.cut_after is not None and index >= b.cut_after:
                self.stream_finished_at.append(time.monotonic())
                return  # the connection ends without [DONE]
            last = index == len(pieces) - 1
            usage = self._usage() if (include_usage and b.usage_in_last_chunk and last) else None
            event = chunk(body, {"content": piece} if index else {"role": "assistant", "content": piece},
                          usage=usage, include_usage=include_usage, finish="stop" if last and not calls else None)
            await response.write(b"data: " + json.dumps(event).encode() + end)
            if chunk_delay:
                await asyncio.sleep(chunk_delay)
        for ordinal, (name, arguments) in enumerate(calls):
            text = json.dumps(arguments)
            middle = text.index(":") + 1 if ":" in text else len(text)
            for part_index, part in enumerate((text[:middle], text[middle:])):
                call: dict[str, Any] = {"index": ordinal, "function": {"arguments": part}}
                if part_index == 0:
                    call.update({"id": f"call_fake{ordinal + 1}", "type": "function"})
                    call["function"]["name"] = name
                last = ordinal == len(calls) - 1 and part_index == 1
                event = chunk(body, {"tool_calls": [call]}, usage=None, include_usage=include_usage,
                              finish="tool_calls" if last else None)
                await response.write(b"data: " + json.dumps(event).encode() + end)
        if include_usage and not b.usage_in_last_chunk:
            usage_event = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1,
                           "model": body["model"], "choices": [], "usage": self._usage()}
            await response.write(b"data: " + json.dumps(usage_event).encode() + end)
        await response.write(b"data: [DONE]" + end)
        self.stream_finished_at.append(time.monotonic())
        if b.linger_after_done:
            await asyncio.sleep(b.linger_after_done)
        await response.write_eof()

    # -- Responses ---------------------------------------------------------------------------------------

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        try:
            if not isinstance(body, dict):
                raise Refused("We could not parse the JSON body of your request.")
            validate_responses(body)
        except Refused as refused:
            return self._refuse(refused)
        failure = await self._misbehave(body)
        if failure is not None:
            return failure
        if body.get("stream"):
            return await self._responses_stream(request, body)
        return web.json_response(response_object(body, status="completed", usage=self._response_usage()))

    def _response_usage(self) -> Any:
        return None if self.behaviour.mode == "no_usage" else {
            "input_tokens": 11, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 18}

    async def _responses_stream(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        b = self.behaviour
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        sequence = 0

        async def send(kind: str, data: dict[str, Any]) -> None:
            nonlocal sequence
            payload = {"type": kind, "sequence_number": sequence, **data}
            await response.write(f"event: {kind}\ndata: {json.dumps(payload)}\n\n".encode())
            sequence += 1
            if b.chunk_delay:
                await asyncio.sleep(b.chunk_delay)

        final = response_object(body, status="completed", usage=self._response_usage())
        await send("response.created", {"response": response_object(body, status="in_progress", usage=None,
                                                                     output=[])})
        await send("response.in_progress", {"response": response_object(body, status="in_progress", usage=None,
                                                                         output=[])})
        for output_index, item in enumerate(final["output"]):
            if item["type"] == "message":
                text = item["content"][0]["text"]
                await send("response.output_item.added", {"output_index": output_index, "item": {
                    **item, "status": "in_progress", "content": []}})
                part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                await send("response.content_part.added", {"item_id": item["id"], "output_index": output_index,
                                                           "content_index": 0, "part": part})
                pieces = [text] if text.startswith("{") else [word + " " for word in text.split(" ")[:-1]] + [
                    text.split(" ")[-1]]
                for count, piece in enumerate(pieces):
                    if b.cut_after is not None and count >= b.cut_after:
                        return response
                    await send("response.output_text.delta", {"item_id": item["id"], "output_index": output_index,
                                                              "content_index": 0, "delta": piece, "logprobs": []})
                await send("response.output_text.done", {"item_id": item["id"], "output_index": output_index,
                                                         "content_index": 0, "text": text, "logprobs": []})
                await send("response.content_part.done", {"item_id": item["id"], "output_index": output_index,
                                                          "content_index": 0, "part": {**part, "text": text}})
            else:
                await send("response.output_item.added", {"output_index": output_index, "item": {
                    **item, "status": "in_progress", "arguments": ""}})
                arguments = item["arguments"]
                middle = arguments.index(":") + 1 if ":" in arguments else len(arguments)
                for piece in (arguments[:middle], arguments[middle:]):
                    await send("response.function_call_arguments.delta", {
                        "item_id": item["id"], "output_index": output_index, "delta": piece})
                await send("response.function_call_arguments.done", {
                    "item_id": item["id"], "output_index": output_index, "name": item["name"],
                    "arguments": arguments})
            await send("response.output_item.done", {"output_index": output_index, "item": item})
        await send("response.completed", {"response": final})
        await response.write_eof()
        return response

    # -- pass-through endpoints ---------------------------------------------------------------------------

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        """Embeddings of the `input`, after the `delays` entry of the body's `user` (pass-through tests)."""
        body = await self._record(request)
        try:
            _validate(EMBEDDINGS, body)
        except Refused as refused:
            return self._refuse(refused)
        await asyncio.sleep(self.behaviour.delays.get(str(body.get("user")), self.behaviour.delay))
        inputs = body["input"]
        if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        size = body.get("dimensions", 4)
        data = []
        for index, _ in enumerate(inputs):
            vector = [round(0.1 * (index + 1) + 0.01 * position, 4) for position in range(size)]
            encoded: Any = vector
            if body.get("encoding_format") == "base64":
                encoded = base64.b64encode(struct.pack(f"<{size}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        return web.json_response({"object": "list", "data": data, "model": body["model"],
                                  "usage": {"prompt_tokens": 5, "total_tokens": 5}})

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        try:
            _validate(COMPLETIONS, body)
        except Refused as refused:
            return self._refuse(refused)
        return web.json_response({
            "id": "cmpl-fake", "object": "text_completion", "created": 1, "model": body["model"],
            "choices": [{"index": 0, "text": "completed text", "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})

    async def _moderations(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        try:
            _validate(MODERATIONS, body)
        except Refused as refused:
            return self._refuse(refused)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        return web.json_response({"id": "modr-fake", "model": body.get("model", "omni-moderation-latest"),
                                  "results": [{"flagged": False, "categories": {}, "category_scores": {},
                                               "category_applied_input_types": {}} for _ in inputs]})

    async def _model(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        return web.json_response({"id": request.match_info["model"], "object": "model", "created": 1,
                                  "owned_by": "fake"})


def _json_schema(body: dict[str, Any]) -> Any:
    """The schema of a requested structured output (chat `response_format` or Responses `text.format`)."""
    chat_format = body.get("response_format") or {}
    if chat_format.get("type") == "json_schema":
        return chat_format["json_schema"].get("schema", {})
    text_format = (body.get("text") or {}).get("format") or {}
    if text_format.get("type") == "json_schema":
        return text_format["schema"]
    return None


def _called_tools(body: dict[str, Any]) -> list[tuple[str, Any]]:
    """(name, arguments) of the calls the fake model makes: every offered function tool, or the one forced."""
    choice = body.get("tool_choice")
    if choice == "none":
        return []
    tools = []
    for tool in body.get("tools") or []:
        if tool.get("type") != "function":
            continue
        function = tool.get("function", tool)  # chat nests the function; Responses does not
        tools.append((function["name"], sample(function.get("parameters") or {}) or {}))
    if isinstance(choice, dict):
        forced = (choice.get("function") or {}).get("name") or choice.get("name")
        tools = [tool for tool in tools if tool[0] == forced]
    if body.get("parallel_tool_calls") is False:
        tools = tools[:1]
    return tools


def _system_prompt(body: dict[str, Any]) -> str:
    for message in body.get("messages") or []:
        if message["role"] in ("system", "developer"):
            content = message["content"]
            return content if isinstance(content, str) else "".join(part["text"] for part in content)
    return ""


def completion(body: dict[str, Any], *, usage: Any) -> dict[str, Any]:
    """A `ChatCompletion` naming the system prompt it saw, with a call to each tool the fake model calls."""
    structured = _json_schema(body)
    content = json.dumps(sample(structured)) if structured is not None else f"answer to [{_system_prompt(body)}]"
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    calls = _called_tools(body)
    if calls:
        message["tool_calls"] = [{"id": f"call_fake{ordinal}", "type": "function", "function": {
            "name": name, "arguments": json.dumps(arguments)}} for ordinal, (name, arguments) in enumerate(calls, 1)]
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1,
        "model": body["model"],
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop",
                     "logprobs": None}],
        "usage": usage,
    }


def chunk(
    body: dict[str, Any],
    delta: dict[str, Any],
    *,
    usage: Any,
    include_usage: bool,
    finish: str | None,
) -> dict[str, Any]:
    """A `ChatCompletionChunk` with one choice (and `usage`, null but present, when usage was asked for)."""
    event: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": body["model"],
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if include_usage:
        event["usage"] = usage
    return event


def response_object(body: dict[str, Any], *, status: str, usage: Any,
                    output: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A `Response` (response.py) answering a Responses request, as the fake model would."""
    if output is None:
        structured = _json_schema(body)
        text = json.dumps(sample(structured)) if structured is not None else f"answer to [{responses_system(body)}]"
        output = [{"id": "msg_fake1", "type": "message", "role": "assistant", "status": "completed",
                   "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}]
        for ordinal, (name, arguments) in enumerate(_called_tools(body), start=1):
            output.append({"id": f"fc_fake{ordinal}", "type": "function_call", "call_id": f"call_fake{ordinal}",
                           "name": name, "arguments": json.dumps(arguments), "status": "completed"})
    text_config = body.get("text") or {}
    return {
        "id": "resp_fake", "object": "response", "created_at": 1, "status": status, "error": None,
        "incomplete_details": None, "instructions": body.get("instructions"), "model": body["model"],
        "output": output, "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "temperature": body.get("temperature", 1.0), "top_p": body.get("top_p", 1.0),
        "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools", []),
        "max_output_tokens": body.get("max_output_tokens"), "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None}, "store": body.get("store", True),
        "text": {"format": text_config.get("format", {"type": "text"}), "verbosity": "medium"},
        "truncation": "disabled", "usage": usage, "user": body.get("user"), "metadata": body.get("metadata") or {},
        "safety_identifier": body.get("safety_identifier"), "prompt_cache_key": body.get("prompt_cache_key"),
    }


def responses_system(body: dict[str, Any]) -> str:
    """The system prompt a Responses request carries: `instructions`, else its first system/developer item."""
    if body.get("instructions"):
        return str(body["instructions"])
    items = body.get("input")
    for item in items if isinstance(items, list) else []:
        if item.get("type", "message") == "message" and item.get("role") in ("system", "developer"):
            content = item["content"]
            return content if isinstance(content, str) else "".join(part.get("text", "") for part in content)
    return ""
