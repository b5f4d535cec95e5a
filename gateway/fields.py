"""Pure: every field of OpenAI's chat-completions request and answer, and what each provider kind does with it.

Fields come from openai-python: the request from
`types/chat/completion_create_params.py` and the message and content-part
types beside it (`chat_completion_*_param.py`), the answer from
`types/chat/chat_completion.py`, `chat_completion_message.py` and
`types/completion_usage.py`. Anthropic's side comes from anthropic-sdk-python
`types/message_create_params.py` and `types/message.py`.

`REQUEST` holds each top-level request field: what a `kind: openai` and a
`kind: anthropic` provider do with it, and, for the Anthropic translation,
which values it refuses. A field Anthropic has no counterpart for is refused
with a 400 naming it only for a value that would change the answer (`n: 2`,
`seed: 7`); the values that change nothing (`n: 1`, a penalty of 0, null)
are accepted. `MESSAGE_FIELDS` does the same for the fields inside messages
and content parts (the translator checks those where it converts them), and
`ANSWER` for the answer's fields.

Readers: `gateway.providers.anthropic` refuses what `anthropic_refusal`
refuses, and any field not listed here, as OpenAI refuses an unknown one
("Unrecognized request argument"); `gateway.config` refuses a version on an
Anthropic provider whose `params` it refuses; the README's field tables are
`request_table()` and `answer_fields_table()` (the Anthropic stop reasons and
block types are `gateway.providers.normalise.answer_table()`). Tests keep
these tables, the SDK types and the README equal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gateway.families import OPENAI_REASONING

# What a field's value does on Anthropic: None when it is carried or changes nothing, else why it is refused.
Rule = Callable[[object], str | None]

FORWARDED = "forwarded"
# Anthropic requires `max_tokens`; used when neither the app nor the version sets one.
DEFAULT_MAX_TOKENS = 4096
# reasoning_effort → Anthropic's thinking budget (`thinking.budget_tokens`, at least 1024). OpenAI counts
# reasoning in `max_completion_tokens` and Anthropic counts thinking in `max_tokens`, so the budget is
# added to the answer's limit: the visible answer keeps the limit the app set.
THINKING_BUDGETS: Mapping[str, int] = {
    "minimal": 1024,
    "low": 2048,
    "medium": 8192,
    "high": 16384,
    "xhigh": 24576,
    "max": 32000,
}
# OpenAI's service_tier → Anthropic's: "auto" uses priority capacity when the organisation has it.
SERVICE_TIERS: Mapping[str, str] = {
    "auto": "auto",
    "default": "standard_only",
    "priority": "auto",
    "scale": "auto",
    "fast": "auto",
}
# The tool a `json_object` answer is forced through on Anthropic (structured output needs a schema);
# its input comes back as the message's content. An app's own tool may not take this name.
JSON_OBJECT_TOOL = "response_format_json_object"
# Not OpenAI fields, taken on the chat API as OpenAI-compatible servers take them.
EXTENSIONS = frozenset({"top_k"})
# Why a field not listed here is refused.
UNKNOWN = "not a field of OpenAI's chat request"


@dataclass(frozen=True, slots=True)
class Field:
    """One field: what each provider kind does with it (README wording) and Anthropic's refusal rule."""

    openai: str
    anthropic: str
    refuses: Rule | None = None


def _unless(*accepted: object, why: str) -> Rule:
    """Refuse every value but null and `accepted` (compared by type too: `True` is not 1)."""

    def rule(value: object) -> str | None:
        if value is None or any(type(value) is type(ok) and value == ok for ok in accepted):
            return None
        return why

    return rule


def _logit_bias(value: object) -> str | None:
    if value is None or (isinstance(value, dict) and all(bias == 0 for bias in value.values())):
        return None
    return "Anthropic has no token biases"


def _modalities(value: object) -> str | None:
    if value is None or (isinstance(value, list) and all(modality == "text" for modality in value)):
        return None
    return "Anthropic answers in text only"


def _service_tier(value: object) -> str | None:
    if value is None or (isinstance(value, str) and value in SERVICE_TIERS):
        return None
    if value == "flex":
        return "Anthropic has no flex processing"
    return f"must be one of {', '.join(SERVICE_TIERS)}"


def _reasoning_effort(value: object) -> str | None:
    if value is None or value == "none" or (isinstance(value, str) and value in THINKING_BUDGETS):
        return None
    return f"must be one of none, {', '.join(THINKING_BUDGETS)}"


def _web_search(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        return "must be an object"
    if value.get("search_context_size") not in (None, "medium"):
        return "search_context_size other than medium: Anthropic's web search has no such setting"
    return None


def _legacy(value: object) -> str | None:
    if value is None or value == []:
        return None
    return ("the deprecated function-calling answer (`message.function_call`) cannot be made from an "
            "Anthropic answer; send `tools` and `tool_choice`")


_BUDGETS = ", ".join(f"{effort} {budget}" for effort, budget in THINKING_BUDGETS.items())
_TIERS = ", ".join(f"{openai} → {anthropic}" for openai, anthropic in SERVICE_TIERS.items())
_MAX_TOKENS = (f"`max_tokens` (Anthropic requires one: the call's, else the version's, else {DEFAULT_MAX_TOKENS}; "
               "`max_completion_tokens` wins over `max_tokens`), plus the thinking budget when "
               "`reasoning_effort` turns thinking on")
_REFUSED = "refused (400) unless"

REQUEST: Mapping[str, Field] = {
    "messages": Field(
        "forwarded after the version's prompt injection (`prompt_mode`)",
        "system and developer messages → `system` (one string, or text blocks keeping their `cache_control` when "
        "the app sent parts); user and assistant turns merged to alternate; tool results → `tool_result` blocks; "
        "each message field below"),
    "model": Field("replaced by the version's `model`", "replaced by the version's `model`"),
    "audio": Field(FORWARDED, f"{_REFUSED} null: Anthropic answers in text only",
                   _unless(why="Anthropic answers in text only")),
    "frequency_penalty": Field(FORWARDED, f"{_REFUSED} 0 or null: Anthropic has no penalties",
                               _unless(0, 0.0, why="Anthropic has no penalties")),
    "function_call": Field(FORWARDED, f"{_REFUSED} null: the deprecated function-calling answer cannot be made "
                                      "from Anthropic's; use `tool_choice`", _legacy),
    "functions": Field(FORWARDED, f"{_REFUSED} null or empty: as `function_call`; use `tools`", _legacy),
    "logit_bias": Field(FORWARDED, f"{_REFUSED} empty, null or every bias 0: Anthropic has no token biases",
                        _logit_bias),
    "logprobs": Field(FORWARDED, f"{_REFUSED} false or null: Anthropic returns no log probabilities",
                      _unless(False, why="Anthropic returns no log probabilities")),
    "max_completion_tokens": Field(FORWARDED, _MAX_TOKENS),
    "max_tokens": Field(FORWARDED, _MAX_TOKENS),
    "metadata": Field(FORWARDED, "its `user_id` key → `metadata.user_id` when neither `user` nor "
                                 "`safety_identifier` is set; the other keys label OpenAI's stored completions "
                                 "and are not carried"),
    "modalities": Field(FORWARDED, f"{_REFUSED} `[\"text\"]` or null: Anthropic answers in text only", _modalities),
    "moderation": Field(FORWARDED, f"{_REFUSED} null: Anthropic runs no moderation a call configures",
                        _unless(why="Anthropic runs no moderation a call configures")),
    "n": Field(FORWARDED, f"{_REFUSED} 1 or null: Anthropic answers one choice per call",
               _unless(1, why="Anthropic answers one choice per call")),
    "parallel_tool_calls": Field(FORWARDED, "false → `tool_choice.disable_parallel_tool_use: true` (on `auto` when "
                                            "the call names no `tool_choice`; nothing to disable with `none` or "
                                            "without tools); true → Anthropic's default"),
    "prediction": Field(FORWARDED, "accepted, not carried: a latency hint, the answer is the same"),
    "presence_penalty": Field(FORWARDED, f"{_REFUSED} 0 or null: Anthropic has no penalties",
                              _unless(0, 0.0, why="Anthropic has no penalties")),
    "prompt_cache_key": Field(FORWARDED, "accepted, not carried: OpenAI's cache-routing hint; Anthropic caches "
                                         "prefixes at `cache_control` marks"),
    "prompt_cache_options": Field(FORWARDED, "accepted, not carried: Anthropic caches only at marks "
                                             "(`cache_control`, `prompt_cache_breakpoint`)"),
    "prompt_cache_retention": Field(FORWARDED, "accepted, not carried: an Anthropic cache entry lives as long as "
                                               "its mark's `ttl` says"),
    "reasoning_effort": Field(FORWARDED, f"→ `thinking`: none → disabled; else enabled with `budget_tokens` {_BUDGETS} "
                                         "(added to `max_tokens`); `temperature`, `top_p` and `top_k` are then "
                                         "removed (Anthropic takes none with thinking)", _reasoning_effort),
    "response_format": Field(FORWARDED, "`text` → nothing; `json_schema` → `output_config.format` (Anthropic's "
                                        "structured output, always strict; `name` and `description` not carried); "
                                        "`json_object`, or `json_schema` without a schema → a forced tool "
                                        f"`{JSON_OBJECT_TOOL}` whose input comes back as `content` with "
                                        "`finish_reason: stop` (refused with `reasoning_effort`: Anthropic does "
                                        "not think when a tool is forced)"),
    "safety_identifier": Field(FORWARDED, "→ `metadata.user_id` when `user` is not set"),
    "seed": Field(FORWARDED, f"{_REFUSED} null: Anthropic has no seeded sampling",
                  _unless(why="Anthropic has no seeded sampling")),
    "service_tier": Field(FORWARDED, f"→ `service_tier`: {_TIERS}; flex refused (Anthropic has no flex "
                                     "processing)", _service_tier),
    "stop": Field(FORWARDED, "→ `stop_sequences` (a string becomes a list of one)"),
    "store": Field(FORWARDED, "accepted, not carried: OpenAI's stored completions; the gateway records every "
                              "call itself"),
    "stream": Field(FORWARDED, "→ `stream`"),
    "stream_options": Field("`include_usage` set so the call's tokens are recorded (never sent with the provider's "
                            "`stream_options: false`); the usage chunk reaches only a client that asked",
                            "`include_usage` → the usage chunk, from Anthropic's usage; `include_obfuscation` "
                            "accepted (no padding is added)"),
    "temperature": Field(FORWARDED, "→ `temperature`; above 1 sent as 1 (Anthropic's range is 0 to 1, OpenAI's 0 "
                                    "to 2)"),
    "tool_choice": Field(FORWARDED, "`none`, `auto`, `required`, a named function → `none`, `auto`, `any`, `tool`; "
                                    "`allowed_tools` → `tools` cut to the allowed ones with `auto` or `any`; "
                                    "dropped without tools when `none` or `auto`; a named custom tool refused"),
    "tools": Field(FORWARDED, "function tools → tools (`parameters` → `input_schema`, `description`, `strict`); "
                              f"custom tools refused (Anthropic has no grammar tools); the name `{JSON_OBJECT_TOOL}` "
                              "refused"),
    "top_logprobs": Field(FORWARDED, f"{_REFUSED} 0 or null: Anthropic returns no log probabilities",
                          _unless(0, why="Anthropic returns no log probabilities")),
    "top_p": Field(FORWARDED, "→ `top_p`"),
    "user": Field(FORWARDED, "→ `metadata.user_id`"),
    "verbosity": Field(FORWARDED, f"{_REFUSED} medium or null: Anthropic has no verbosity setting",
                       _unless("medium", why="Anthropic has no verbosity setting")),
    "web_search_options": Field(FORWARDED, "→ the `web_search_20250305` server tool (`user_location` carried); a "
                                           "`search_context_size` other than medium refused", _web_search),
    "top_k": Field("forwarded (not an OpenAI field; the upstream decides)", "→ `top_k`"),
}

def _message(anthropic: str) -> Field:
    return Field(FORWARDED, anthropic)


MESSAGE_FIELDS: Mapping[str, Field] = {
    "`messages[].role`": _message("system, developer, user, assistant, tool; `function` (deprecated) refused"),
    "`messages[].name`": _message("accepted, not carried: Anthropic has no participant names"),
    "`messages[].cache_control`": _message("→ `cache_control` on the message's last block"),
    "system and developer `messages[].content`": _message("→ `system` (text parts → text blocks; other parts "
                                                          "refused)"),
    "user `messages[].content`": _message("a string → a text block; parts below"),
    "`content[]` text part": _message("→ text block (an empty one is left out: Anthropic refuses empty text)"),
    "`content[].cache_control`": _message("→ the block's `cache_control`"),
    "`content[].prompt_cache_breakpoint`": _message("→ `cache_control` `{type: ephemeral, ttl: 1h}` (OpenAI's 30m "
                                                    "or 12h minimum; 1h is Anthropic's longest)"),
    "`content[].image_url.url`": _message("→ image block: a `data:` URL → base64 source, else URL source"),
    "`content[].image_url.detail`": _message("auto, high: accepted (Anthropic reads images at full resolution); "
                                             "low, original refused (Anthropic has no such setting)"),
    "`content[]` `input_audio` part": _message("refused: Anthropic takes no audio"),
    "`content[]` `file` part": _message("`file_data` of a PDF → document block; `file_id` and other files refused"),
    "assistant `messages[].content`": _message("text and refusal parts → text blocks"),
    "assistant `messages[].refusal`": _message("→ a text block"),
    "assistant `messages[].tool_calls`": _message("function calls → `tool_use` blocks (arguments parsed); custom "
                                                  "tool calls refused"),
    "assistant `messages[].function_call`, `audio`": _message("refused (deprecated function calling; audio)"),
    "assistant `messages[].reasoning_content`, `annotations`": _message(
        "accepted, not carried: parts of an earlier answer sent back (Anthropic would need its signed thinking "
        "block)"),
    "tool `messages[].content`, `tool_call_id`": _message("→ `tool_result` block (`content`, `tool_use_id`)"),
}

ANSWER: Mapping[str, Field] = {
    "`id`": Field("relayed", "the message's `id`"),
    "`object`": Field("relayed", "`chat.completion` (`chat.completion.chunk` streamed)"),
    "`created`": Field("relayed", "the time the gateway translated the answer"),
    "`model`": Field("relayed", "the message's `model`"),
    "`choices`": Field("relayed (all of them)", "one choice, `index` 0"),
    "`message.role`": Field("relayed", "`assistant`"),
    "`message.content`": Field("relayed", "the text blocks joined (or the input of the forced JSON tool); null "
                                          "for a tool call alone"),
    "`message.refusal`": Field("relayed", "the explanation of a `refusal` stop (a default text without one)"),
    "`message.tool_calls`": Field("relayed", "`tool_use` blocks (arguments `\"{}\"` for a tool without input)"),
    "`message.reasoning_content`": Field("relayed when the upstream sends it", "`thinking` blocks"),
    "`message.annotations`, `message.audio`, `message.function_call`": Field("relayed", "absent"),
    "`finish_reason`": Field("relayed", "from `stop_reason` (table below)"),
    "`logprobs`": Field("relayed", "absent (asking for them is refused)"),
    "`usage.prompt_tokens`": Field("relayed", "`input_tokens` + cache reads + cache writes"),
    "`usage.completion_tokens`": Field("relayed", "`output_tokens`"),
    "`usage.total_tokens`": Field("relayed", "their sum"),
    "`usage.prompt_tokens_details`": Field("relayed", "`cached_tokens` ← `cache_read_input_tokens`, "
                                                      "`cache_write_tokens` ← `cache_creation_input_tokens`"),
    "`usage.completion_tokens_details`": Field("relayed", "absent"),
    "`service_tier`": Field("relayed", "from `usage.service_tier`: standard → default, priority → priority"),
    "`system_fingerprint`, `metadata`, `moderation`": Field("relayed", "absent"),
}


def anthropic_refusal(name: str, value: object) -> str | None:
    """Why the Anthropic translation refuses request field `name` with `value`, or None when it takes it.

    A field not in `REQUEST` is refused too (OpenAI refuses one it does not
    know), with UNKNOWN as the reason.
    """
    field = REQUEST.get(name)
    if field is None:
        return UNKNOWN
    return field.refuses(value) if field.refuses is not None else None


def _openai(name: str, field: Field) -> str:
    if name in OPENAI_REASONING.unsupported:
        return f"{field.openai}; removed for reasoning models (`{OPENAI_REASONING.name}` family)"
    if name in OPENAI_REASONING.renamed:
        return f"{field.openai}; sent as `{OPENAI_REASONING.renamed[name]}` to reasoning models"
    return field.openai


def request_table() -> str:
    """The README's table of the chat request's fields: what each provider kind does with each."""
    rows = ["| request field | `kind: openai` | `kind: anthropic` |", "|---|---|---|"]
    rows += [f"| `{name}` | {_openai(name, field)} | {field.anthropic} |" for name, field in REQUEST.items()]
    rows.append("| a field not listed | forwarded (the upstream decides; OpenAI refuses it) | refused (400, "
                "\"Unrecognized request argument supplied\") |")
    rows += [f"| {name} | {field.openai} | {field.anthropic} |" for name, field in MESSAGE_FIELDS.items()]
    return "\n".join(rows) + "\n"


def answer_fields_table() -> str:
    """The README's table of the chat answer's fields: where each comes from on each provider kind."""
    rows = ["| answer field | `kind: openai` | `kind: anthropic` |", "|---|---|---|"]
    rows += [f"| {name} | {field.openai} | {field.anthropic} |" for name, field in ANSWER.items()]
    return "\n".join(rows) + "\n"
