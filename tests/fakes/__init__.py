"""Fake upstreams for the tests: real HTTP servers on 127.0.0.1, as strict as the APIs they stand for.

- `openai`: chat completions, Responses, embeddings, models, completions, moderations (`FakeUpstream`);
- `anthropic`: Messages and count_tokens (`FakeAnthropic`);
- `server`: the server thread, the record of a call, a webhook receiver, schema samples;
- `schema`: the small checker the fakes validate request bodies with.

Each fake's module docstring lists the rules it enforces and the SDK types they come from;
`tests/test_fakes.py` proves each rule refuses what it should.
"""

from __future__ import annotations

from tests.fakes.anthropic import AnthropicBehaviour, FakeAnthropic
from tests.fakes.openai import Behaviour, FakeUpstream, chunk, completion
from tests.fakes.server import Received, ServerThread, WebhookReceiver, free_port, sample

__all__ = [
    "AnthropicBehaviour",
    "Behaviour",
    "FakeAnthropic",
    "FakeUpstream",
    "Received",
    "ServerThread",
    "WebhookReceiver",
    "chunk",
    "completion",
    "free_port",
    "sample",
]
