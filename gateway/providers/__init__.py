"""Wire formats behind one small interface (see `base.Provider`)."""

from __future__ import annotations

from gateway.config import ProviderSettings
from gateway.providers.anthropic import AnthropicProvider
from gateway.providers.base import Answer, Provider, StreamTranslator, UpstreamRequest
from gateway.providers.openai import OpenAIProvider

__all__ = ["Answer", "Provider", "StreamTranslator", "UpstreamRequest", "create_provider"]


def create_provider(name: str, settings: ProviderSettings) -> Provider:
    kind = {"openai": OpenAIProvider, "anthropic": AnthropicProvider}[settings.kind]
    return kind(name, api_key=settings.api_key.get_secret_value(), headers=settings.headers)
