"""Node clients, unchanged: the openai package and the Vercel AI SDK (`ai` + `@ai-sdk/openai`).

`tests/clients/node/clients.mjs` makes one call per run; this test starts it
with `node` against the running gateway and checks what the client got and
what the upstream received. `.ci/run` installs the packages (`npm ci`); where
node or the packages are missing the tests skip, saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.clients.conftest import (
    CANARY_USER,
    CLIENT_KEY,
    STABLE_USER,
    answer_of,
    expect_version,
    stable_path,
    streamed_answer_of,
)
from tests.conftest import Gateway
from tests.fakes import FakeAnthropic, FakeUpstream

NODE_DIR = Path(__file__).parent / "node"
USERS = pytest.mark.parametrize("user", [STABLE_USER, CANARY_USER], ids=["stable", "canary"])
pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_DIR / "node_modules").is_dir(),
    reason="node or tests/clients/node/node_modules is missing (run `npm ci` there, as .ci/run does)",
)


def run_node(case: str, gateway: Gateway, user: str) -> dict[str, Any]:
    env = {**os.environ, "GATEWAY_URL": gateway.url, "CLIENT_KEY": CLIENT_KEY, "USER_ID": user}
    done = subprocess.run(["node", "clients.mjs", case], cwd=NODE_DIR, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@USERS
@pytest.mark.parametrize("case", ["openai-chat", "ai-chat-generate-text"])
def test_chat_completions_clients(mixed: Gateway, fake: FakeUpstream, claude: FakeAnthropic, user: str,
                                  case: str) -> None:
    assert run_node(case, mixed, user)["text"] == answer_of(user)
    expect_version(fake, claude, user)


@USERS
@pytest.mark.parametrize("case", ["openai-responses", "ai-generate-text"])
def test_responses_clients(responses_mixed: Gateway, fake: FakeUpstream, claude: FakeAnthropic, user: str, case: str,
                           stable_api: str) -> None:
    assert run_node(case, responses_mixed, user)["text"] == answer_of(user)
    expect_version(fake, claude, user)
    if user == STABLE_USER:
        assert fake.received[-1].path == stable_path(stable_api)


@USERS
def test_openai_responses_stream(responses_mixed: Gateway, fake: FakeUpstream, claude: FakeAnthropic, user: str,
                                 stable_api: str) -> None:
    result = run_node("openai-responses-stream", responses_mixed, user)
    assert result["text"] == result["completed"] == streamed_answer_of(user, stable_api)
    expect_version(fake, claude, user)


@USERS
def test_ai_sdk_stream_text(responses_mixed: Gateway, fake: FakeUpstream, claude: FakeAnthropic, user: str,
                            stable_api: str) -> None:
    assert run_node("ai-stream-text", responses_mixed, user)["text"] == streamed_answer_of(user, stable_api)
    expect_version(fake, claude, user)


@USERS
def test_ai_sdk_generate_object(responses_mixed: Gateway, fake: FakeUpstream, claude: FakeAnthropic, user: str,
                                stable_api: str) -> None:
    assert run_node("ai-generate-object", responses_mixed, user)["object"] == {"city": "Paris", "days": 1}
    seen = expect_version(fake, claude, user)
    if user == STABLE_USER and stable_api == "responses":  # natively: the schema reaches OpenAI as a text format
        assert seen.body["text"]["format"]["type"] == "json_schema"
    elif user == STABLE_USER:  # through the pivot: as chat's response_format
        assert seen.body["response_format"]["type"] == "json_schema"
