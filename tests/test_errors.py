"""The error tree and its one HTTP mapping: statuses and shapes, order of the table, causes kept."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from gateway.api.errors import ANSWERS, error_body, http_status
from gateway.config import DatabaseSettings
from gateway.errors import (
    ClientError,
    GatewayError,
    NotFound,
    Overloaded,
    RateLimited,
    StoreUnavailable,
    UpstreamOverloaded,
    UpstreamRefused,
    UpstreamStatusError,
    UpstreamTimeout,
)
from gateway.store import create_engine, translated_errors


def test_every_class_in_the_table_comes_before_its_bases() -> None:
    classes = list(ANSWERS)
    for position, cls in enumerate(classes):
        later_subclasses = [other for other in classes[position + 1:] if issubclass(other, cls)]
        assert not later_subclasses, f"{later_subclasses} come after their base {cls} and would never match"
    assert classes[-1] is GatewayError


@pytest.mark.parametrize(
    ("error", "status", "error_type", "code"),
    [
        (NotFound("no such deployment", param="model", code="model_not_found"), 404, "invalid_request_error",
         "model_not_found"),
        (RateLimited("slow down", retry_after=3), 429, "rate_limit_error", "rate_limited"),
        (Overloaded("busy"), 503, "server_error", "gateway_overloaded"),
        (UpstreamTimeout("late"), 504, "upstream_error", "upstream_timeout"),
        (UpstreamStatusError("bad key", upstream_status=401, code="upstream_error"), 502, "upstream_error",
         "upstream_error"),
        # A refusal keeps the provider's own code, null included.
        (UpstreamRefused("too long", upstream_status=422, error_type="invalid_request_error"), 422,
         "invalid_request_error", None),
        (UpstreamRefused("slow down", upstream_status=429, error_type="rate_limit_error", code="rate_limit_exceeded"),
         429, "rate_limit_error", "rate_limit_exceeded"),
        (UpstreamOverloaded("overloaded", upstream_status=529, code="overloaded_error"), 503, "server_error",
         "overloaded_error"),
        (StoreUnavailable("down"), 503, "server_error", "store_unavailable"),
        (GatewayError("unexpected"), 500, "server_error", None),
    ],
)
def test_each_error_maps_to_one_status_and_openai_shape(
    error: GatewayError, status: int, error_type: str, code: str | None
) -> None:
    assert http_status(error) == status
    assert error_body(error) == {"message": error.message, "type": error_type, "param": error.param, "code": code}


def test_overloaded_is_not_the_callers_fault() -> None:
    assert not isinstance(Overloaded("busy"), ClientError)


async def test_a_database_error_becomes_store_unavailable_keeping_its_cause(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/missing/dir/db.sqlite", DatabaseSettings())
    try:
        with pytest.raises(StoreUnavailable) as caught:
            async with translated_errors(), engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
    assert isinstance(caught.value.__cause__, DBAPIError)
