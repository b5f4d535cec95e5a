"""Every string a client controls, made hostile, through the real server on PostgreSQL.

Body fields, path parameters, query strings and headers each get NUL, a lone
surrogate, control characters, CRLF, a right-to-left override and huge
values. Whatever the gateway answers must be a 4xx in OpenAI's error shape,
or a success whose data is stored: never a 5xx, a dropped connection or a
record the database later refuses (PostgreSQL text refuses NUL; UTF-8
cannot carry a lone surrogate).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.config import settings_from_dict
from tests.conftest import ADMIN_TOKEN, TABLES, Gateway, base_config, query
from tests.fakes import FakeUpstream

# As JSON text: "\ud800" cannot be encoded as UTF-8, so bodies are written by hand.
HOSTILE = {
    "nul": "a\\u0000b",
    "lone_surrogate": "x\\ud800",
    "low_surrogate_first": "\\udc00y",
    "controls": "\\u0001\\u001b[31m\\u007f\\u0085",
    "crlf": "a\\r\\nX-Injected: 1",
    "rtl_override": "\\u202egnp.exe",
    "huge": "h" * 20_000,
}
# Path segments and query values, percent-encoded as a client would send them.
HOSTILE_IN_URL = {
    "nul": "%00",
    "lone_surrogate_bytes": "%ED%A0%80",
    "invalid_utf8": "%FF%FE",
    "controls": "%01%1B%7F",
    "crlf": "%0D%0A",
    "huge": "h" * 8_000,
    "dots": "..%2F..%2Fetc",
}
MESSAGES = '[{"role": "user", "content": "hi"}]'


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream, postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    query(postgres_url, f"TRUNCATE {', '.join(TABLES)}, quality_scores CASCADE")
    config = base_config(postgres_url, upstream.url, tmp_path_factory.mktemp("hostile") / "spool")
    served = Gateway(settings_from_dict(config)).start()
    yield served
    served.stop()


@pytest.fixture(autouse=True)
def good_upstream(upstream: FakeUpstream) -> None:
    upstream.reset()


def send(gateway: Gateway, method: str, path: str, *, body: str | None = None,
         headers: dict[str, str] | None = None, admin: bool = False) -> httpx.Response:
    all_headers = {"content-type": "application/json", **(headers or {})}
    if admin:
        all_headers["authorization"] = f"Bearer {ADMIN_TOKEN}"
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        return client.request(method, path, content=body.encode() if body is not None else None,
                              headers=all_headers)


def assert_no_server_error(answer: httpx.Response) -> None:
    assert answer.status_code < 500, (answer.status_code, answer.text[:300])
    if answer.status_code >= 400:
        error = answer.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        assert isinstance(error["message"], str) and error["message"]


def chat_body(field: str, value: str) -> str:
    body = {"model": '"support-bot"', "messages": MESSAGES, "user": '"u"'}
    if field == "content":
        body["messages"] = f'[{{"role": "user", "content": "{value}"}}]'
    elif field == "role":
        body["messages"] = f'[{{"role": "{value}", "content": "hi"}}]'
    elif field == "metadata.user_id":
        body.pop("user")
        body["metadata"] = f'{{"user_id": "{value}"}}'
    elif field == "unknown key":
        body[value] = '"x"'
    else:
        body[field] = f'"{value}"'
    return "{" + ", ".join(f'"{key}": {item}' for key, item in body.items()) + "}"


@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
@pytest.mark.parametrize("field", ["model", "user", "safety_identifier", "metadata.user_id", "content", "role",
                                   "stop", "unknown key"])
def test_chat_completion_fields(gateway: Gateway, field: str, value: str) -> None:
    answer = send(gateway, "POST", "/v1/chat/completions", body=chat_body(field, value))
    assert_no_server_error(answer)
    if answer.status_code == 200:
        request_id = answer.headers["x-request-id"]
        assert gateway_stored(gateway, request_id)


@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
@pytest.mark.parametrize("field", ["request_id", "comment", "thumbs"])
def test_feedback_fields(gateway: Gateway, field: str, value: str) -> None:
    call = send(gateway, "POST", "/v1/chat/completions", body=chat_body("user", "feedback-user"))
    assert call.status_code == 200
    request_id = call.headers["x-request-id"]
    assert gateway_stored(gateway, request_id)
    fields = {"request_id": f'"{request_id}"', "score": "0.5"}
    if field == "thumbs":
        fields.pop("score")
    fields[field] = f'"{value}"'
    answer = send(gateway, "POST", "/v1/feedback",
                  body="{" + ", ".join(f'"{key}": {item}' for key, item in fields.items()) + "}")
    assert_no_server_error(answer)
    if answer.status_code in (200, 202):
        # Accepted means stored: the score reaches the database (the writer never drops it).
        assert len(scores_of(gateway, request_id)) == 1


@pytest.mark.parametrize("value", HOSTILE_IN_URL.values(), ids=HOSTILE_IN_URL.keys())
@pytest.mark.parametrize("path", [
    "/v1/models/{}", "/admin/deployments/{}", "/admin/deployments/{}/compare", "/admin/deployments/{}/timeseries",
    "/admin/deployments/{}/events", "/admin/deployments/support-bot/{}", "/v1/{}",
])
def test_path_parameters(gateway: Gateway, path: str, value: str) -> None:
    method = "POST" if path == "/admin/deployments/support-bot/{}" else "GET"
    answer = send(gateway, method, path.format(value), body="{}" if method == "POST" else None,
                  admin=path.startswith("/admin"))
    assert_no_server_error(answer)


@pytest.mark.parametrize("value", [*HOSTILE_IN_URL.values(), "nan", "inf", "-inf", "1e308", "-1", "0",
                                   "99999999999999999999999"], ids=[*HOSTILE_IN_URL.keys(), "nan", "inf", "-inf",
                                                                     "1e308", "-1", "0", "huge_int"])
@pytest.mark.parametrize(("path", "parameter"), [
    ("/admin/deployments/support-bot/compare", "hours"),
    ("/admin/deployments/support-bot/timeseries", "hours"),
    ("/admin/deployments/support-bot/timeseries", "step"),
    ("/admin/deployments/support-bot/events", "limit"),
    ("/admin/deployments/support-bot/events", "before"),
])
def test_query_strings(gateway: Gateway, path: str, parameter: str, value: str) -> None:
    assert_no_server_error(send(gateway, "GET", f"{path}?{parameter}={value}", admin=True))


@pytest.mark.parametrize("value", ["\x01\x7f", "é" * 10, "x" * 8_000, "%00", "a\tb", "a b c"],
                         ids=["controls", "latin1", "huge", "percent_nul", "tab", "spaces"])
@pytest.mark.parametrize("header", ["x-request-id", "x-user-id", "authorization", "content-type"])
def test_headers(gateway: Gateway, header: str, value: str) -> None:
    headers = [(header.encode(), value.encode("latin-1"))]
    if header != "content-type":
        headers.append((b"content-type", b"application/json"))
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        answer = client.post("/v1/chat/completions", content=chat_body("user", "u").encode(), headers=headers)
    if answer.status_code == 400 and not answer.headers.get("content-type", "").startswith("application/json"):
        # Control characters in a header are malformed HTTP: the server's parser refuses them before the app.
        assert any((ord(char) < 32 and char != "\t") or ord(char) == 127 for char in value)
        return
    assert_no_server_error(answer)
    if answer.status_code == 200:
        assert gateway_stored(gateway, answer.headers["x-request-id"])
        if header == "x-request-id":
            assert answer.headers["x-request-id"] != value or value.isprintable()


@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
@pytest.mark.parametrize("field", ["name", "model", "system_prompt", "provider", "prompt_mode", "params key",
                                   "few_shot content"])
def test_admin_version_fields(gateway: Gateway, field: str, value: str) -> None:
    body = {"name": '"v-hostile"', "provider": '"fake"', "model": '"model-a"', "system_prompt": '"hello"'}
    if field == "params key":
        body["params"] = f'{{"{value}": 1}}'
    elif field == "few_shot content":
        body["few_shot"] = f'[{{"role": "user", "content": "{value}"}}]'
    else:
        body[field] = f'"{value}"'
    answer = send(gateway, "POST", "/admin/deployments/support-bot/versions", admin=True,
                  body="{" + ", ".join(f'"{key}": {item}' for key, item in body.items()) + "}")
    assert_no_server_error(answer)
    if answer.status_code == 201:
        stored = send(gateway, "GET", "/admin/deployments/support-bot", admin=True)
        assert stored.status_code == 200
        # Created versions must be usable names and readable back; clean up for the next case.
        query(gateway.settings.database_url, "DELETE FROM versions WHERE name = 'v-hostile'")


@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
@pytest.mark.parametrize(("path", "field"), [
    ("/admin/deployments/support-bot/rollback", "reason"),
    ("/admin/deployments/support-bot/pause", "reason"),
    ("/admin/deployments/support-bot/canary", "version"),
    ("/admin/deployments/support-bot/canary-percent", "reason"),
])
def test_admin_change_fields(gateway: Gateway, path: str, field: str, value: str) -> None:
    body = {field: f'"{value}"'}
    if path.endswith("canary-percent"):
        body["percent"] = "10"
    method = "PUT" if path.endswith("canary-percent") else "POST"
    answer = send(gateway, method, path, admin=True,
                  body="{" + ", ".join(f'"{key}": {item}' for key, item in body.items()) + "}")
    assert_no_server_error(answer)
    if answer.status_code == 200:
        events = send(gateway, "GET", "/admin/deployments/support-bot/events?limit=1", admin=True)
        assert events.status_code == 200 and events.json()["events"]
    # Back to a known state for the next case.
    send(gateway, "POST", "/admin/deployments/support-bot/resume", admin=True, body="{}")


def gateway_stored(gateway: Gateway, request_id: str, *, timeout: float = 10.0) -> bool:
    """Wait until the call's record is in the database; False if it never comes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if query(gateway.settings.database_url, "SELECT id FROM request_records WHERE id = :id", id=request_id):
            return True
        time.sleep(0.05)
    return False


def scores_of(gateway: Gateway, request_id: str, *, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Wait until a quality score of the call is in the database; what is there then."""
    deadline = time.monotonic() + timeout
    while True:
        rows = query(gateway.settings.database_url, "SELECT comment FROM quality_scores WHERE request_id = :id",
                     id=request_id)
        if rows or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)
