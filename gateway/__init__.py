"""canary-gateway: an OpenAI-compatible LLM gateway that ships prompt changes as canary rollouts."""

__version__ = "0.1.0"
