"""Model prices: a shipped default table, overridden by the config's `pricing`.

USD per 1M tokens, as the providers published them when last checked
(2025-10). Prices change: set `pricing` in the config for the models you
use; a model in neither table records no cost (and the gateway says so once).
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.models import Price

DEFAULT_PRICES: Mapping[str, Price] = {
    # OpenAI (cache_read: cached input)
    "gpt-4o": Price(input=2.50, output=10.00, cache_read=1.25),
    "gpt-4o-mini": Price(input=0.15, output=0.60, cache_read=0.075),
    "gpt-4.1": Price(input=2.00, output=8.00, cache_read=0.50),
    "gpt-4.1-mini": Price(input=0.40, output=1.60, cache_read=0.10),
    "gpt-4.1-nano": Price(input=0.10, output=0.40, cache_read=0.025),
    "gpt-5": Price(input=1.25, output=10.00, cache_read=0.125),
    "gpt-5-mini": Price(input=0.25, output=2.00, cache_read=0.025),
    "gpt-5-nano": Price(input=0.05, output=0.40, cache_read=0.005),
    "o3-mini": Price(input=1.10, output=4.40, cache_read=0.55),
    "o4-mini": Price(input=1.10, output=4.40, cache_read=0.275),
    # Anthropic (cache_write: 5-minute cache writes; cache_read: cache hits)
    "claude-opus-4-1": Price(input=15.00, output=75.00, cache_read=1.50, cache_write=18.75),
    "claude-opus-4": Price(input=15.00, output=75.00, cache_read=1.50, cache_write=18.75),
    "claude-sonnet-4-5": Price(input=3.00, output=15.00, cache_read=0.30, cache_write=3.75),
    "claude-sonnet-4": Price(input=3.00, output=15.00, cache_read=0.30, cache_write=3.75),
    "claude-3-7-sonnet": Price(input=3.00, output=15.00, cache_read=0.30, cache_write=3.75),
    "claude-3-5-sonnet": Price(input=3.00, output=15.00, cache_read=0.30, cache_write=3.75),
    "claude-haiku-4-5": Price(input=1.00, output=5.00, cache_read=0.10, cache_write=1.25),
    "claude-3-5-haiku": Price(input=0.80, output=4.00, cache_read=0.08, cache_write=1.00),
    # DeepSeek (cache_read: cache hits)
    "deepseek-chat": Price(input=0.28, output=0.42, cache_read=0.028),
    "deepseek-reasoner": Price(input=0.28, output=0.42, cache_read=0.028),
}


class PriceTable:
    """Looks a model up by its exact name, else by the longest known prefix
    (`claude-sonnet-4-20250514` is priced as `claude-sonnet-4`)."""

    def __init__(self, configured: Mapping[str, Price], defaults: Mapping[str, Price] = DEFAULT_PRICES) -> None:
        self._prices = {**defaults, **configured}
        self._by_length = sorted(self._prices, key=len, reverse=True)

    def get(self, model: str) -> Price | None:
        """The price of `model`: an exact entry, else the longest known name it extends with `-`.

        Dated snapshots (`gpt-4o-2024-08-06`) find their model; None when nothing matches.
        """
        price = self._prices.get(model)
        if price is not None:
            return price
        for known in self._by_length:
            if model.startswith(known + "-"):
                return self._prices[known]
        return None
