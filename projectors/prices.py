"""Model prices as data: USD per million tokens, read from `prices.json` beside this module."""

from __future__ import annotations

from pathlib import Path

import msgspec

from schemas import Usage


class Price(msgspec.Struct, frozen=True, kw_only=True):
    input: float
    cached_input: float
    output: float


class Prices(msgspec.Struct, frozen=True, kw_only=True):
    models: dict[str, Price]
    default: Price

    def cost(self, model: str | None, usage: Usage) -> float:
        """Estimated USD for `usage` on `model` (unknown or missing models use the default price)."""
        price = self.models.get(model or "", self.default)
        fresh = max(usage.input_tokens - usage.cached_input_tokens, 0)
        dollars = (
            fresh * price.input
            + usage.cached_input_tokens * price.cached_input
            + (usage.output_tokens) * price.output
        )
        return round(dollars / 1_000_000, 6)


def load(path: Path | None = None) -> Prices:
    source = path or Path(__file__).with_name("prices.json")
    return msgspec.json.decode(source.read_bytes(), type=Prices)
