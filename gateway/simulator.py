"""A simulated upstream: `kind: simulated` providers answer from inside the gateway.

`SimulatedTransport` is an httpx transport that answers the gateway's calls
the way OpenAI's chat completions API (`api: chat_completions`) or
Anthropic's Messages API (`api: messages`) would, with no network and no key.
It is how the gateway is tried (`canary-gateway demo`) and how an app is
tested against the gateway offline. Everything above the transport (the
provider's wire format, deadlines, retries, the relay, records, metrics)
runs as it does against a real upstream.

What it does, per upstream model (`simulation.models`, `SimulatedModel`):

- validates the request like the real API: unknown top-level fields, missing
  required ones, wrong types, out-of-range sampling parameters, unknown roles
  and empty text blocks are 400s in the API's own error shape (fields from
  the official SDKs' request types: `openai-python`
  `src/openai/types/chat/completion_create_params.py`, `anthropic-sdk-python`
  `src/anthropic/types/message_create_params.py`); nothing those types allow
  is refused;
- answers Anthropic's `POST /v1/messages/count_tokens` (`api: messages`)
  with the prompt tokens it would bill, validated like the real endpoint
  (`message_count_tokens_params.py`: no sampling fields, no `max_tokens`);
- fails a share of calls (`error_rate`) with the API's HTTP 500 body;
- waits a log-normal time to the first token (median `latency_ms`, sigma
  `latency_spread`), then `completion_tokens` / `tokens_per_second`; streams
  send their chunks over that time, in the API's event format;
- writes an answer whose quality is drawn around `quality`: a complete answer,
  a partial one, an unsure one, or a refusal (which the `refusal` evaluator
  recognises); a model with `judge: true` answers instead with the verdict
  `{"score", "reason"}` a judge gives the `<answer>` it is shown, reading the
  simulated answers' quality back from their wording, or, shown two answers
  (`<answer_a>`, `<answer_b>`: the shadow stage's pairwise comparison), the
  preference `{"winner": "A" | "B" | "tie", "reason"}` those qualities give;
- answers tool calls when tools are offered and one is required, and JSON
  (an instance of the requested schema) when JSON output is asked for;
- counts tokens as about four characters each, and honours `max_tokens`
  (finish reason `length` / stop reason `max_tokens`).

The random draws come from one `random.Random` (seeded by `simulation.seed`).

Why one module over 400 lines: it is a complete fake upstream for two wire
APIs (request validation as strict as the real ones, answers, streams,
errors) that shares one model of simulated quality; split, each half would
reach into the other's internals.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from gateway.config import SimulatedModel, SimulationSettings
from gateway.inbound import content_text

# Top-level request fields of OpenAI's chat completions (CompletionCreateParams, openai-python 3.x).
CHAT_FIELDS = frozenset({
    "messages", "model", "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs",
    "max_completion_tokens", "max_tokens", "metadata", "modalities", "moderation", "n", "parallel_tool_calls",
    "prediction", "presence_penalty", "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention",
    "reasoning_effort", "response_format", "safety_identifier", "seed", "service_tier", "stop", "store", "stream",
    "stream_options", "temperature", "tool_choice", "tools", "top_logprobs", "top_p", "user", "verbosity",
    "web_search_options",
})
CHAT_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
# Top-level request fields of Anthropic's Messages API (MessageCreateParams, anthropic-sdk-python 2.x),
# plus the sampling parameters its API reference has long documented.
MESSAGES_FIELDS = frozenset({
    "model", "messages", "max_tokens", "cache_control", "container", "context_management", "diagnostics",
    "inference_geo", "mcp_servers", "metadata", "output_config", "prefill", "service_tier", "speed",
    "stop_sequences", "stream", "system", "thinking", "tool_choice", "tools", "user_profile_id", "workspace_id",
    "temperature", "top_p", "top_k",
})
MESSAGES_ROLES = ("user", "assistant")
# MessageCountTokensParams: the request fields that describe the input, and nothing about generating.
COUNT_TOKENS_FIELDS = frozenset({
    "model", "messages", "cache_control", "context_management", "mcp_servers", "output_config", "system",
    "thinking", "tool_choice", "tools",
})

# The wording of a simulated answer gives its quality away to the simulated judge, as the
# quality of a real answer shows in what it says. Highest first.
_TIERS: tuple[tuple[float, str], ...] = (
    (0.95, "Here is a complete answer to your question about {topic}."),
    (0.80, "Here is an answer to your question about {topic}."),
    (0.60, "This partly answers your question about {topic}."),
    (0.35, "I am not sure about {topic}, but it may help to know this."),
    (0.10, "I'm sorry, but I can't help with that."),
)
_STEPS = (
    "First, open the settings page and find the section that matches your account.",
    "Then follow the steps shown there, one at a time, and confirm each change.",
    "If something does not work, sign out, sign back in and try the step again.",
    "The change usually takes effect at once; a few take up to an hour.",
    "Our help centre has screenshots of every step if you want to compare.",
)
_QUALITY_NOISE = 0.12
_JUDGE_NOISE = 0.04
# A pairwise judge calls answers whose read qualities differ by less than this a tie.
_TIE_MARGIN = 0.05


class SimulatedTransport(httpx.AsyncBaseTransport):
    """Answers POSTs to `/chat/completions` (api `chat_completions`) or `/v1/messages` (api `messages`)."""

    def __init__(
        self,
        settings: SimulationSettings,
        *,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._rng = rng or random.Random(settings.seed)
        self._sleep = sleep
        self._clock = clock
        self._default = SimulatedModel()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        api = self._settings.api
        if api == "messages" and request.method == "POST" and request.url.path.endswith("/v1/messages/count_tokens"):
            return self._count_tokens(request)
        try:
            body = self._validated(request)
            profile = self._settings.models.get(body["model"], self._default)
            if self._rng.random() < profile.error_rate:
                await self._sleep(self._first_token_delay(profile))
                raise _ApiError(500, "server_error" if api == "chat_completions" else "api_error",
                                "The server had an error while processing your request.")
            answer = self._compose(body, profile)
        except _ApiError as error:
            return _error_response(api, error)
        if body.get("stream"):
            events = _chat_events(body, answer) if api == "chat_completions" else _message_events(body, answer)
            return httpx.Response(200, headers={"content-type": "text/event-stream"},
                                  stream=_PacedStream(events, profile, self._first_token_delay(profile),
                                                      self._sleep))
        await self._sleep(self._first_token_delay(profile) + answer.completion_tokens / profile.tokens_per_second)
        payload = _chat_completion(body, answer, self._clock()) if api == "chat_completions" else _message(body,
                                                                                                       answer)
        return _json_response(200, payload)

    def _count_tokens(self, request: httpx.Request) -> httpx.Response:
        try:
            body = json.loads(request.content)
        except (ValueError, RecursionError):
            body = None
        try:
            if not isinstance(body, dict):
                raise _ApiError(400, "invalid_request_error", "The request body must be a JSON object.")
            if not request.headers.get("anthropic-version"):
                raise _ApiError(400, "invalid_request_error", "anthropic-version: header is required")
            unknown = sorted(set(body) - COUNT_TOKENS_FIELDS)
            if unknown:
                raise _ApiError(400, "invalid_request_error", f"{unknown[0]}: Extra inputs are not permitted")
            check_messages_request({**body, "max_tokens": 1})
        except _ApiError as error:
            return _error_response("messages", error)
        return _json_response(200, {"input_tokens": _prompt_tokens(body, "messages")})

    def _validated(self, request: httpx.Request) -> dict[str, Any]:
        api = self._settings.api
        expected = "/chat/completions" if api == "chat_completions" else "/v1/messages"
        if request.method != "POST" or not request.url.path.endswith(expected):
            raise _ApiError(404, "not_found_error" if api == "messages" else "invalid_request_error",
                            f"Unknown request URL: {request.method} {request.url.path}.", code="unknown_url")
        try:
            body = json.loads(request.content)
        except (ValueError, RecursionError):
            raise _ApiError(400, "invalid_request_error",
                            "We could not parse the JSON body of your request.") from None
        if not isinstance(body, dict):
            raise _ApiError(400, "invalid_request_error", "The request body must be a JSON object.")
        if api == "chat_completions":
            check_chat_request(body)
        else:
            if not request.headers.get("anthropic-version"):
                raise _ApiError(400, "invalid_request_error", "anthropic-version: header is required")
            check_messages_request(body)
        return body

    def _first_token_delay(self, profile: SimulatedModel) -> float:
        spread = math.exp(self._rng.gauss(0.0, profile.latency_spread)) if profile.latency_spread else 1.0
        return profile.latency_ms * spread / 1000

    def _compose(self, body: Mapping[str, Any], profile: SimulatedModel) -> _Answer:
        api = self._settings.api
        messages = body["messages"]
        prompt = _prompt_tokens(body, api)
        limit = body.get("max_tokens") if api == "messages" else (
            body.get("max_completion_tokens") or body.get("max_tokens"))
        tool = _required_tool(body, api)
        if tool is not None:
            name, schema = tool
            arguments = json.dumps(schema_instance(schema, "simulated"))
            return _Answer(text=None, tool=(f"call_{uuid.uuid4().hex[:24]}", name, arguments),
                           prompt_tokens=prompt, completion_tokens=_tokens(arguments), truncated=False)
        if profile.judge:
            text = self._verdict(_last_text(messages))
        else:
            target = max(1, round(profile.completion_tokens * self._rng.uniform(0.6, 1.4)))
            text = self._answer(_topic(messages), target, profile.quality)
        schema = _json_schema(body, api)
        if schema is not None:
            text = json.dumps(schema_instance(schema, text))
        truncated = isinstance(limit, int) and _tokens(text) > limit
        if truncated:
            assert isinstance(limit, int)
            text = text[: limit * 4]
        return _Answer(text=text, tool=None, prompt_tokens=prompt, completion_tokens=_tokens(text),
                       truncated=truncated)

    def _answer(self, topic: str, tokens: int, quality: float) -> str:
        drawn = min(1.0, max(0.0, self._rng.gauss(quality, _QUALITY_NOISE)))
        score, opening = min(_TIERS, key=lambda tier: abs(tier[0] - drawn))
        text = opening.format(topic=topic)
        if score < 0.2:
            return text
        step = 0
        while _tokens(text) < tokens:
            text += " " + _STEPS[step % len(_STEPS)]
            step += 1
        return text

    def _verdict(self, judged: str) -> str:
        if "<answer_a>" in judged:
            return self._preference(judged)
        answer = judged.split("<answer>", 1)[-1].split("</answer>", 1)[0].strip()
        score, reason = judge_score(answer)
        noisy = min(1.0, max(0.0, score + self._rng.gauss(0.0, _JUDGE_NOISE)))
        return json.dumps({"score": round(noisy, 2), "reason": reason})


    def _preference(self, judged: str) -> str:
        first = judged.split("<answer_a>", 1)[-1].split("</answer_a>", 1)[0].strip()
        second = judged.split("<answer_b>", 1)[-1].split("</answer_b>", 1)[0].strip()
        a = judge_score(first)[0] + self._rng.gauss(0.0, _JUDGE_NOISE)
        b = judge_score(second)[0] + self._rng.gauss(0.0, _JUDGE_NOISE)
        winner = "tie" if abs(a - b) < _TIE_MARGIN else "A" if a > b else "B"
        return json.dumps({"winner": winner, "reason": f"Simulated preference: A reads as {a:.2f}, B as {b:.2f}."})


def judge_score(answer: str) -> tuple[float, str]:
    """What the simulated judge thinks of an answer: its tier's score for a simulated one, else a rough guess."""
    if not answer:
        return 0.0, "The answer is empty."
    for score, opening in _TIERS:
        head = opening.split("{topic}")[0]
        if answer.startswith(head):
            return score, f"Simulated verdict: the answer reads as quality {score:.2f}."
    if answer.lower().startswith(("i'm sorry", "i am sorry", "i cannot", "i can't")):
        return 0.1, "The answer refuses the request."
    return 0.7, "The answer is not one the simulator wrote; scored as adequate."


def check_chat_request(body: Mapping[str, Any]) -> None:
    """Raise `_ApiError` (400) where OpenAI's chat completions would refuse `body`."""
    unknown = sorted(set(body) - CHAT_FIELDS)
    if unknown:
        raise _ApiError(400, "invalid_request_error", f"Unrecognized request argument supplied: {unknown[0]}")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise _ApiError(400, "invalid_request_error", "you must provide a model parameter", param="model",
                        code="missing_required_parameter" if "model" not in body else "invalid_type")
    messages = body.get("messages")
    if messages is None:
        raise _ApiError(400, "invalid_request_error", "Missing required parameter: 'messages'.",
                        param="messages", code="missing_required_parameter")
    if not isinstance(messages, list):
        raise _invalid_type("messages", "an array", messages)
    if not messages:
        raise _ApiError(400, "invalid_request_error",
                        "Invalid 'messages': empty array. Expected an array with minimum length 1, "
                        "but got an empty array instead.", param="messages", code="empty_array")
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise _invalid_type(where, "an object", message)
        role = message.get("role")
        if role not in CHAT_ROLES:
            supported = ", ".join(f"'{name}'" for name in CHAT_ROLES)
            raise _ApiError(400, "invalid_request_error", f"Invalid value: '{role}'. Supported values are: "
                            f"{supported}.", param=f"{where}.role", code="invalid_value")
        content = message.get("content")
        if content is None and role != "assistant":
            raise _ApiError(400, "invalid_request_error", f"Missing required parameter: '{where}.content'.",
                            param=f"{where}.content", code="missing_required_parameter")
        if content is not None and not isinstance(content, str | list):
            raise _invalid_type(f"{where}.content", "one of a string or an array of objects", content)
    _check_number(body, "temperature", 0.0, 2.0)
    _check_number(body, "top_p", 0.0, 1.0)
    _check_number(body, "presence_penalty", -2.0, 2.0)
    _check_number(body, "frequency_penalty", -2.0, 2.0)
    for name in ("max_tokens", "max_completion_tokens", "n", "seed", "top_logprobs"):
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise _invalid_type(name, "an integer", value)
    for name in ("max_tokens", "max_completion_tokens", "n"):
        value = body.get(name)
        if isinstance(value, int) and value < 1:
            raise _ApiError(400, "invalid_request_error", f"Invalid '{name}': integer below minimum value. "
                            f"Expected a value >= 1, but got {value} instead.", param=name,
                            code="integer_below_min_value")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _invalid_type("stream", "a boolean", stream)
    if body.get("stream_options") is not None and not stream:
        raise _ApiError(400, "invalid_request_error",
                        "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                        param="stream_options", code="invalid_value")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _invalid_type("tools", "an array", tools)
        for index, tool in enumerate(tools):
            function = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise _ApiError(400, "invalid_request_error", f"Missing required parameter: "
                                f"'tools[{index}].function.name'.", param=f"tools[{index}].function.name",
                                code="missing_required_parameter")


def check_messages_request(body: Mapping[str, Any]) -> None:
    """Raise `_ApiError` (400) where Anthropic's Messages API would refuse `body`."""
    unknown = sorted(set(body) - MESSAGES_FIELDS)
    if unknown:
        raise _ApiError(400, "invalid_request_error", f"{unknown[0]}: Extra inputs are not permitted")
    for name in ("model", "messages", "max_tokens"):
        if name not in body:
            raise _ApiError(400, "invalid_request_error", f"{name}: Field required")
    if not isinstance(body["model"], str) or not body["model"]:
        raise _ApiError(400, "invalid_request_error", "model: Input should be a valid string")
    max_tokens = body["max_tokens"]
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise _ApiError(400, "invalid_request_error", "max_tokens: Input should be a positive integer")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise _ApiError(400, "invalid_request_error", "messages: Input should be a valid list")
    if not messages:
        raise _ApiError(400, "invalid_request_error", "messages: at least one message is required")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in MESSAGES_ROLES:
            raise _ApiError(400, "invalid_request_error",
                            f"messages.{index}.role: Input should be 'user' or 'assistant'")
        _check_blocks(message.get("content"), f"messages.{index}.content")
    system = body.get("system")
    if system is not None:
        if isinstance(system, list):
            for index, block in enumerate(system):
                if not isinstance(block, dict) or block.get("type") != "text":
                    raise _ApiError(400, "invalid_request_error",
                                    f"system.{index}: Input should be a text block")
                _check_blocks([block], f"system.{index}")
        elif not isinstance(system, str):
            raise _ApiError(400, "invalid_request_error", "system: Input should be a valid string or list")
    _check_number(body, "temperature", 0.0, 1.0, api="messages")
    _check_number(body, "top_p", 0.0, 1.0, api="messages")
    stop = body.get("stop_sequences")
    if stop is not None and (not isinstance(stop, list) or not all(isinstance(item, str) for item in stop)):
        raise _ApiError(400, "invalid_request_error", "stop_sequences: Input should be a valid list of strings")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _ApiError(400, "invalid_request_error", "stream: Input should be a valid boolean")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _ApiError(400, "invalid_request_error", "tools: Input should be a valid list")
        for index, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                raise _ApiError(400, "invalid_request_error", f"tools.{index}.name: Field required")
            if tool.get("type") in (None, "custom") and not isinstance(tool.get("input_schema"), dict):
                raise _ApiError(400, "invalid_request_error", f"tools.{index}.input_schema: Field required")


def schema_instance(schema: object, text: str, depth: int = 0) -> Any:
    """A small value that satisfies a JSON schema's required shape; strings are `text`."""
    if not isinstance(schema, Mapping) or depth > 8:
        return text
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for combinator in ("anyOf", "oneOf", "allOf"):
        options = schema.get(combinator)
        if isinstance(options, list) and options:
            return schema_instance(options[0], text, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((item for item in kind if item != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        properties = schema.get("properties")
        if not isinstance(properties, Mapping):
            return {}
        return {name: schema_instance(sub, text, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        count = schema.get("minItems", 0) if isinstance(schema.get("minItems"), int) else 0
        return [schema_instance(schema.get("items"), text, depth + 1) for _ in range(count)]
    if kind == "integer":
        return int(schema["minimum"]) if isinstance(schema.get("minimum"), int | float) else 1
    if kind == "number":
        return schema["minimum"] if isinstance(schema.get("minimum"), int | float) else 0.5
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return text


@dataclass(frozen=True, slots=True)
class _Answer:
    text: str | None
    # (id, name, JSON arguments) of a tool call, instead of text.
    tool: tuple[str, str, str] | None
    prompt_tokens: int
    completion_tokens: int
    truncated: bool


class _ApiError(Exception):
    def __init__(self, status: int, error_type: str, message: str, *, param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.param = param
        self.code = code


def _error_response(api: str, error: _ApiError) -> httpx.Response:
    if api == "chat_completions":
        payload: dict[str, Any] = {"error": {"message": error.message, "type": error.error_type,
                                             "param": error.param, "code": error.code}}
    else:
        payload = {"type": "error", "error": {"type": error.error_type, "message": error.message}}
    return _json_response(error.status, payload)


def _json_response(status: int, payload: Mapping[str, Any]) -> httpx.Response:
    # An unread stream, as a network transport returns it: the caller reads (or caps) the body itself.
    return httpx.Response(status, headers={"content-type": "application/json"},
                          stream=httpx.ByteStream(json.dumps(payload).encode()))


def _invalid_type(param: str, expected: str, value: object) -> _ApiError:
    got = {bool: "a boolean", int: "an integer", float: "a decimal", str: "a string", list: "an array",
           dict: "an object", type(None): "null"}.get(type(value), "a value")
    return _ApiError(400, "invalid_request_error", f"Invalid type for '{param}': expected {expected}, "
                     f"but got {got} instead.", param=param, code="invalid_type")


def _check_number(body: Mapping[str, Any], name: str, low: float, high: float, *, api: str = "chat") -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        if api == "messages":
            raise _ApiError(400, "invalid_request_error", f"{name}: Input should be a valid number")
        raise _invalid_type(name, "a decimal", value)
    if not low <= value <= high:
        if api == "messages":
            raise _ApiError(400, "invalid_request_error",
                            f"{name}: Input should be between {low:g} and {high:g}")
        side = "above maximum" if value > high else "below minimum"
        bound = f"<= {high:g}" if value > high else f">= {low:g}"
        raise _ApiError(400, "invalid_request_error", f"Invalid '{name}': decimal {side} value. Expected a value "
                        f"{bound}, but got {value} instead.", param=name,
                        code=f"decimal_{'above_max' if value > high else 'below_min'}_value")


def _check_blocks(content: object, where: str) -> None:
    if isinstance(content, str):
        if not content:
            raise _ApiError(400, "invalid_request_error", f"{where}: text content blocks must be non-empty")
        return
    if not isinstance(content, list):
        raise _ApiError(400, "invalid_request_error", f"{where}: Input should be a valid string or list")
    for index, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise _ApiError(400, "invalid_request_error", f"{where}.{index}.type: Field required")
        if block["type"] == "text" and not (isinstance(block.get("text"), str) and block["text"].strip()):
            raise _ApiError(400, "invalid_request_error", f"{where}.{index}: text content blocks must be non-empty")


def _last_text(messages: Iterable[Mapping[str, Any]]) -> str:
    texts = [content_text(message.get("content")) for message in messages if message.get("role") == "user"]
    return texts[-1] if texts else ""


def _topic(messages: Iterable[Mapping[str, Any]]) -> str:
    words = _last_text(messages).split()
    topic = " ".join(words[:8]).rstrip("?.!,;:")
    return f'"{topic}"' if topic else "that"


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def _prompt_tokens(body: Mapping[str, Any], api: str) -> int:
    total = sum(4 + _tokens(content_text(message.get("content"))) for message in body["messages"])
    if api == "messages" and body.get("system"):
        total += _tokens(content_text(body["system"]))
    if body.get("tools"):
        total += _tokens(json.dumps(body["tools"]))
    return total


def _required_tool(body: Mapping[str, Any], api: str) -> tuple[str, object] | None:
    """The tool the model must call (name, parameter schema), or None."""
    tools = [tool for tool in body.get("tools") or [] if isinstance(tool, dict)]
    choice = body.get("tool_choice")
    if not tools or choice is None:
        return None
    if api == "chat_completions":
        functions = {tool["function"]["name"]: tool["function"].get("parameters") for tool in tools}
        if choice == "required":
            return next(iter(functions.items()))
        if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
            name = choice["function"].get("name")
            return (name, functions[name]) if name in functions else None
        return None
    schemas = {tool["name"]: tool.get("input_schema") for tool in tools}
    if isinstance(choice, dict) and choice.get("type") == "any":
        return next(iter(schemas.items()))
    if isinstance(choice, dict) and choice.get("type") == "tool" and choice.get("name") in schemas:
        return choice["name"], schemas[choice["name"]]
    return None


def _json_schema(body: Mapping[str, Any], api: str) -> object | None:
    """The schema the answer's text must follow, `{}` for any JSON object, None for free text."""
    if api == "chat_completions":
        response_format = body.get("response_format")
        if not isinstance(response_format, dict):
            return None
        if response_format.get("type") == "json_object":
            return {"type": "object", "properties": {"answer": {"type": "string"}}}
        if response_format.get("type") == "json_schema":
            spec = response_format.get("json_schema")
            return spec.get("schema", {}) if isinstance(spec, dict) else {}
        return None
    output = body.get("output_config")
    form = output.get("format") if isinstance(output, dict) else None
    if isinstance(form, dict) and form.get("type") == "json_schema":
        schema: object = form.get("schema", {})
        return schema
    return None


def _chat_completion(body: Mapping[str, Any], answer: _Answer, now: float) -> dict[str, Any]:
    """A ChatCompletion (openai-python `types/chat/chat_completion.py`)."""
    message: dict[str, Any] = {"role": "assistant", "content": answer.text, "refusal": None, "annotations": []}
    if answer.tool is not None:
        call_id, name, arguments = answer.tool
        message["tool_calls"] = [{"id": call_id, "type": "function",
                                  "function": {"name": name, "arguments": arguments}}]
    count = body.get("n") or 1
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(now),
        "model": body["model"],
        "choices": [{"index": index, "message": message, "logprobs": None, "finish_reason": _finish(answer)}
                    for index in range(count)],
        "usage": _chat_usage(answer, count),
        "service_tier": "default",
        "system_fingerprint": "fp_simulated",
    }


def _chat_usage(answer: _Answer, count: int = 1) -> dict[str, Any]:
    completion = answer.completion_tokens * count
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": answer.prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0,
                                      "rejected_prediction_tokens": 0},
    }


def _finish(answer: _Answer) -> str:
    return "tool_calls" if answer.tool else "length" if answer.truncated else "stop"


def _pieces(text: str) -> list[str]:
    """The answer in stream deltas of a few words each."""
    words = text.split(" ")
    return [" ".join(words[index:index + 3]) + (" " if index + 3 < len(words) else "")
            for index in range(0, len(words), 3)]


def _chat_events(body: Mapping[str, Any], answer: _Answer) -> list[tuple[int, bytes]]:
    """ChatCompletionChunk events (openai-python `types/chat/chat_completion_chunk.py`), with their tokens."""
    identity = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": body["model"], "service_tier": "default",
                "system_fingerprint": "fp_simulated"}
    options = body.get("stream_options")
    usage = isinstance(options, dict) and options.get("include_usage") is True

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        event: dict[str, Any] = {**identity, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                         "finish_reason": finish}]}
        if usage:
            event["usage"] = None
        return b"data: " + json.dumps(event).encode() + b"\n\n"

    events = [(0, chunk({"role": "assistant", "content": "" if answer.tool is None else None, "refusal": None}))]
    if answer.tool is not None:
        call_id, name, arguments = answer.tool
        events.append((0, chunk({"tool_calls": [{"index": 0, "id": call_id, "type": "function",
                                                 "function": {"name": name, "arguments": ""}}]})))
        events += [(_tokens(part), chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}))
                   for part in _split(arguments)]
    else:
        events += [(_tokens(piece), chunk({"content": piece})) for piece in _pieces(answer.text or "")]
    events.append((0, chunk({}, _finish(answer))))
    if usage:
        events.append((0, b"data: " + json.dumps({**identity, "choices": [], "usage": _chat_usage(answer)}).encode()
                       + b"\n\n"))
    events.append((0, b"data: [DONE]\n\n"))
    return events


def _split(text: str, size: int = 16) -> list[str]:
    return [text[index:index + size] for index in range(0, len(text), size)] or [""]


def _message(body: Mapping[str, Any], answer: _Answer) -> dict[str, Any]:
    """A Message (anthropic-sdk-python `types/message.py`)."""
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": [_block(answer)],
        "stop_reason": _stop_reason(answer),
        "stop_sequence": None,
        "usage": {"input_tokens": answer.prompt_tokens, "output_tokens": answer.completion_tokens,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "service_tier": "standard"},
    }


def _block(answer: _Answer) -> dict[str, Any]:
    if answer.tool is not None:
        call_id, name, arguments = answer.tool
        return {"type": "tool_use", "id": f"toolu_{call_id[5:]}", "name": name, "input": json.loads(arguments)}
    return {"type": "text", "text": answer.text or "", "citations": None}


def _stop_reason(answer: _Answer) -> str:
    return "tool_use" if answer.tool else "max_tokens" if answer.truncated else "end_turn"


def _message_events(body: Mapping[str, Any], answer: _Answer) -> list[tuple[int, bytes]]:
    """Messages stream events (anthropic-sdk-python `types/raw_message_stream_event.py`), with their tokens."""

    def event(kind: str, data: dict[str, Any]) -> bytes:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()

    start = {**_message(body, answer), "content": [], "stop_reason": None}
    start["usage"] = {**start["usage"], "output_tokens": 1}
    events = [(0, event("message_start", {"message": start}))]
    if answer.tool is not None:
        block = {**_block(answer), "input": {}}
        events.append((0, event("content_block_start", {"index": 0, "content_block": block})))
        events += [(_tokens(part), event("content_block_delta", {"index": 0, "delta": {
            "type": "input_json_delta", "partial_json": part}})) for part in _split(answer.tool[2])]
    else:
        events.append((0, event("content_block_start", {"index": 0, "content_block": {
            "type": "text", "text": "", "citations": None}})))
        events.append((0, event("ping", {})))
        events += [(_tokens(piece), event("content_block_delta", {"index": 0, "delta": {
            "type": "text_delta", "text": piece}})) for piece in _pieces(answer.text or "")]
    events.append((0, event("content_block_stop", {"index": 0})))
    events.append((0, event("message_delta", {"delta": {"stop_reason": _stop_reason(answer), "stop_sequence": None},
                                              "usage": {"output_tokens": answer.completion_tokens}})))
    events.append((0, event("message_stop", {})))
    return events


class _PacedStream(httpx.AsyncByteStream):
    """Sends each event once the simulated model has produced its tokens."""

    def __init__(
        self,
        events: list[tuple[int, bytes]],
        profile: SimulatedModel,
        first_token_delay: float,
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self._events = events
        self._profile = profile
        self._first = first_token_delay
        self._sleep = sleep

    async def __aiter__(self) -> AsyncIterator[bytes]:
        await self._sleep(self._first)
        for tokens, data in self._events:
            if tokens:
                await self._sleep(tokens / self._profile.tokens_per_second)
            yield data

    async def aclose(self) -> None:
        self._events = []
