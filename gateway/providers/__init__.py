"""Wire formats behind one small interface (see `base.Provider`)."""

from __future__ import annotations

from gateway.config import ProviderSettings
from gateway.errors import ConfigError
from gateway.providers.base import Answer, Provider, StreamTranslator, UpstreamRequest
from gateway.providers.openai import OpenAIProvider

__all__ = ["Answer", "Provider", "StreamTranslator", "UpstreamRequest", "create_provider"]


def create_provider(name: str, settings: ProviderSettings) -> Provider:
    if settings.kind == "openai":
        return OpenAIProvider(name, api_key=settings.api_key.get_secret_value(), headers=settings.headers)
    raise ConfigError(f"providers.{name}.kind: '{settings.kind}' is not supported by this build")
