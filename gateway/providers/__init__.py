"""Wire formats behind one small interface (see `base.Provider`)."""

from __future__ import annotations

from gateway.config import ProviderSettings
from gateway.providers.anthropic import AnthropicProvider
from gateway.providers.base import Answer, Provider, StreamTranslator, UpstreamRequest
from gateway.providers.openai import OpenAIProvider

__all__ = ["Answer", "Provider", "StreamTranslator", "UpstreamRequest", "create_provider"]


def create_provider(name: str, settings: ProviderSettings) -> Provider:
    """The wire format of a provider; a simulated one speaks the API it simulates."""
    kind = {"openai": OpenAIProvider, "anthropic": AnthropicProvider}.get(settings.kind)
    if settings.simulation is not None:
        kind = OpenAIProvider if settings.simulation.api == "chat_completions" else AnthropicProvider
    assert kind is not None
    return kind(name, api_key=settings.api_key.get_secret_value(), headers=settings.headers)
