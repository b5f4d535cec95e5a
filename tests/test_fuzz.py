"""The whole OpenAPI surface (proxy and admin), fuzzed: no answer is a 5xx (RELIABILITY A9)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err, Ok

from gateway.config import settings_from_dict
from gateway.migrate import upgrade
from tests.conftest import ADMIN_TOKEN, Gateway, base_config
from tests.fakes import FakeUpstream


@pytest.fixture(scope="module")
def fuzzed_gateway(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    directory = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite+aiosqlite:///{directory / 'gateway.db'}"
    upgrade(url)
    gateway = Gateway(settings_from_dict(base_config(url, upstream.url, directory / "spool"))).start()
    yield gateway
    gateway.stop()


def test_no_server_errors(fuzzed_gateway: Gateway) -> None:
    api = schemathesis.openapi.from_url(f"{fuzzed_gateway.url}/openapi.json")
    results = list(api.get_all_operations())
    assert all(isinstance(result, Ok) for result in results), [result for result in results if isinstance(result, Err)]
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) >= 14  # the proxy, health and every admin route

    for operation in operations:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"} if operation.path.startswith("/admin") else {}

        @given(case=operation.as_strategy())
        @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                  derandomize=True)
        def call(case: Any) -> None:
            # Runs within this iteration, so the loop's `headers` is the one meant.
            case.call_and_validate(headers=headers, checks=[not_a_server_error])  # noqa: B023

        call()
