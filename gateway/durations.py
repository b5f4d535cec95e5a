"""Pure: time spans as the configuration writes them (`500ms`, `30s`, `15m`, `1h`, `1d`) → seconds.

The pydantic field types `Duration` (positive) and `DurationOrZero` (zero
means "none") are used by every settings model (`gateway.config`,
`gateway.policy`); `gateway.reference` names them by their validators.
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object, *, zero: bool = False) -> float:
    """`500ms`, `30s`, `15m`, `1h`, `1d` or a bare number of seconds → seconds.

    Raises ValueError for anything else, for a negative or non-finite value,
    and for zero unless `zero` is true (a setting where zero means "none").
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration like 500ms, 30s, 15m, 1h or 1d")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(f"expected a duration like 500ms, 30s, 15m, 1h or 1d, got {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("a duration must be a finite number of seconds, zero or more")
    if seconds == 0 and not zero:
        raise ValueError("must be longer than zero: zero has no meaning for this setting")
    return seconds


def _duration_or_zero(value: object) -> float:
    return parse_duration(value, zero=True)


# A time span that must be positive (an interval, a timeout, a window), in seconds.
Duration = Annotated[float, BeforeValidator(parse_duration)]
# A time span where zero means "none" (no minimum, no delay, no grace), in seconds.
DurationOrZero = Annotated[float, BeforeValidator(_duration_or_zero)]
