"""canary-gateway: an OpenAI-compatible LLM gateway that ships prompt changes as canary rollouts."""

import sys

__version__ = "0.1.0"

# httpx's package imports its command-line client (`httpx._main`) whenever rich and click are
# installed, and with it rich and pygments: 4 MB of RSS and ~0.1 s of start in every gateway
# process, for a client the gateway never runs. A None entry makes that import fail, which httpx
# expects (its `httpx.main` then only says the CLI is unavailable); the `httpx` command, a
# process of its own, is unaffected. Without effect when httpx was imported first.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
