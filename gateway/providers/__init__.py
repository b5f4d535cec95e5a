"""Wire formats behind one small interface (see `base.Provider`)."""

from __future__ import annotations

from gateway.config import ProviderSettings
from gateway.providers.anthropic import AnthropicProvider
from gateway.providers.base import Answer, Provider, StreamTranslator, UpstreamRequest
from gateway.providers.openai import OpenAIProvider
from gateway.providers.openai_responses import OpenAIResponsesProvider

__all__ = ["Answer", "Provider", "StreamTranslator", "UpstreamRequest", "create_provider"]


def create_provider(name: str, settings: ProviderSettings) -> Provider:
    """The wire format of a provider: its `api` (a simulated one speaks the API it simulates)."""
    api_key = settings.api_key.get_secret_value()
    if settings.api == "messages":
        return AnthropicProvider(name, api_key=api_key, headers=settings.headers)
    if settings.api == "responses":
        return OpenAIResponsesProvider(name, api_key=api_key, headers=settings.headers)
    return OpenAIProvider(name, api_key=api_key, headers=settings.headers, stream_options=settings.stream_options)
