"""litellm as a client of the gateway: it forwards `safety_identifier` (and strips `user` for model names it
does not know, so no gateway can see that one)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import openai
import pytest

# litellm fetches its model price map from the internet at import unless told to use its bundled copy.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm

from tests.clients.conftest import CANARY_USER, CLIENT_KEY, answer_of, expect_version
from tests.conftest import Gateway
from tests.fakes import FakeAnthropic, FakeUpstream

# litellm's own modules warn about their TypedDicts when it imports them lazily on the first call.
pytestmark = pytest.mark.filterwarnings("ignore:Items? .* `ReadOnly` qualifier:UserWarning")


@pytest.fixture
def http(mixed: Gateway) -> Iterator[openai.OpenAI]:
    """The HTTP client litellm sends through, closed after the test (litellm caches its own otherwise)."""
    client = openai.OpenAI(base_url=f"{mixed.url}/v1", api_key=CLIENT_KEY, max_retries=0)
    yield client
    client.close()


def test_litellm_strips_user_for_an_unknown_model(mixed: Gateway, fake: FakeUpstream, claude: FakeAnthropic,
                                                  http: openai.OpenAI) -> None:
    answer = litellm.completion(model="openai/support-bot", api_base=f"{mixed.url}/v1", api_key=CLIENT_KEY,
                                messages=[{"role": "user", "content": "Hi"}], user=CANARY_USER, num_retries=0,
                                client=http)
    # The user never reaches the gateway: the call lands on stable (what the README warns about).
    assert answer.choices[0].message.content == answer_of("anonymous")
    assert "user" not in fake.received[-1].body


def test_litellm_safety_identifier_routes_a_canary_user(mixed: Gateway, fake: FakeUpstream,
                                                        claude: FakeAnthropic, http: openai.OpenAI) -> None:
    answer = litellm.completion(model="openai/support-bot", api_base=f"{mixed.url}/v1", api_key=CLIENT_KEY,
                                messages=[{"role": "user", "content": "Hi"}], safety_identifier=CANARY_USER,
                                num_retries=0, client=http)
    assert answer.choices[0].message.content == answer_of(CANARY_USER)
    expect_version(fake, claude, CANARY_USER)
