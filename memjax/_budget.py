"""Memory budgets: parsing what users write (bytes, "64MiB", "1.5GB", "5%", 0.05) and printing byte counts.

Pure Python; no JAX.
"""

from __future__ import annotations

import math
import re

__all__ = ["Budget", "parse_budget", "format_bytes"]

_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
    "k": 2**10, "m": 2**20, "g": 2**30,
}
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z%]*)\s*$", re.IGNORECASE)


class Budget(tuple):
    """A parsed budget: ``("bytes", n)`` or ``("fraction", f)`` of what standard BPTT would store."""

    __slots__ = ()

    def __new__(cls, kind: str, value: float):
        return super().__new__(cls, (kind, value))

    @property
    def kind(self) -> str:
        return self[0]

    @property
    def value(self) -> float:
        return self[1]

    def resolve(self, store_all_bytes: int) -> int:
        """The budget in bytes, given what standard BPTT would store."""
        if self.kind == "bytes":
            return int(self.value)
        return int(math.floor(self.value * store_all_bytes))


def parse_budget(memory, argument: str = "memory") -> Budget | None:
    """Parse a memory budget.

    Accepts an ``int`` (bytes), a ``float`` in (0, 1] (a fraction of what standard BPTT stores), or a string:
    a byte count with a unit (``"512KiB"``, ``"64MiB"``, ``"1.5GB"``; ``K/M/G`` are binary) or a percentage
    (``"5%"``). ``None`` stays ``None`` (the caller's default).

    Raises:
      ValueError: naming ``argument`` and what would be accepted.
    """
    if memory is None:
        return None
    if isinstance(memory, bool):
        raise ValueError(f"{argument} must be bytes (int), a fraction in (0, 1] or a string like '64MiB', "
                         f"got {memory!r}.")
    if isinstance(memory, str):
        match = _PATTERN.match(memory)
        unit = match.group(2).lower() if match else None
        if match is None or (unit not in _UNITS and unit != "%"):
            raise ValueError(f"{argument}={memory!r} is not a budget; write bytes with a unit such as '512KiB', "
                             f"'64MiB', '1.5GB', or a percentage such as '5%'.")
        number = float(match.group(1))
        if unit == "%":
            return parse_budget(number / 100, argument)
        if number <= 0:
            raise ValueError(f"{argument}={memory!r} must be positive.")
        return Budget("bytes", int(number * _UNITS[unit]))
    if isinstance(memory, int) or (hasattr(memory, "dtype") and getattr(memory.dtype, "kind", "") in "iu"):
        if int(memory) <= 0:
            raise ValueError(f"{argument}={memory!r} bytes must be positive.")
        return Budget("bytes", int(memory))
    try:
        number = float(memory)
    except (TypeError, ValueError):
        raise ValueError(f"{argument} must be bytes (int), a fraction in (0, 1] or a string like '64MiB', "
                         f"got {memory!r}.") from None
    if math.isnan(number) or not 0 < number <= 1:
        raise ValueError(f"{argument}={memory!r}: a float budget is a fraction of what standard BPTT stores and "
                         f"must lie in (0, 1]; pass an int for bytes or a string such as '64MiB'.")
    return Budget("fraction", number)


def format_bytes(count: float) -> str:
    """``1536 -> '1.5 KiB'``."""
    count = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.4g} {unit}"
        count /= 1024
    return f"{count:.4g} GiB"  # pragma: no cover
