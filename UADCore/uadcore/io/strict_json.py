"""JSON text that every parser reads: what `--json` and `--events` print."""

from __future__ import annotations

import json
import math


def strict_json(payload) -> str:
    """``payload`` as strict JSON on one line: NaN and infinities (which JSON has
    not) become null, so every JSON parser reads what UAD prints."""
    return json.dumps(_finite(payload), separators=(",", ":"), allow_nan=False)


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value
