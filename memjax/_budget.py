"""Memory budgets: parsing what users write (bytes, "64MiB", "1.5GB", "5%", 0.05) and printing byte counts.

Pure Python; no JAX.
"""

from __future__ import annotations

import math
import re

__all__ = ["Budget", "format_bytes", "parse_budget"]

# Unit suffixes, case-insensitive. A string with no unit is refused rather than read as bytes: "5" is far more
# often a percentage missing its "%" than a five-byte budget.
_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "k": 2**10,
    "m": 2**20,
    "g": 2**30,
}
# The sign is matched only to say that a budget is negative.
_PATTERN = re.compile(r"^\s*(-?)([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z%]*)\s*$", re.IGNORECASE)
_ACCEPTED = "bytes (int), a fraction in (0, 1] or a string such as '64MiB' or '5%'"


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
        return math.floor(self.value * store_all_bytes)


def parse_budget(memory, argument: str = "memory") -> Budget | None:
    """Parse a memory budget.

    Accepts an ``int`` (bytes), a ``float`` in (0, 1] (a fraction of what standard BPTT stores), or a string:
    a byte count with a unit (``"5B"``, ``"512KiB"``, ``"64MiB"``, ``"1.5GB"``; ``KB/MB/GB/TB`` are decimal,
    ``KiB/MiB/GiB/TiB`` and ``K/M/G`` binary, case is ignored) or a percentage (``"5%"``). ``None`` stays
    ``None`` (the caller's default).

    A string without a unit (``"5"``) is refused: it would mean 5 bytes, where ``"5%"`` was most likely meant.

    Raises:
      ValueError: naming ``argument`` and the value: a string without a unit (suggesting ``"5%"`` and
        ``"5B"``), a negative or zero budget, a fraction outside (0, 1], or anything else that is not a budget.
    """
    if memory is None:
        return None
    # Every refusal is a ValueError, a wrong type included: callers catch one exception for a bad budget.
    if isinstance(memory, (bool, bytes, bytearray)):  # float() would read b"0.5" as a fraction
        raise ValueError(f"{argument} must be {_ACCEPTED}, got {memory!r}.")  # noqa: TRY004
    if isinstance(memory, str):
        return _parse_string(memory, argument)
    if isinstance(memory, int) or (hasattr(memory, "dtype") and getattr(memory.dtype, "kind", "") in "iu"):
        _check_positive(int(memory), memory, argument)
        return Budget("bytes", int(memory))
    try:
        number = float(memory)
    except (TypeError, ValueError):
        raise ValueError(f"{argument} must be {_ACCEPTED}, got {memory!r}.") from None
    _check_positive(number, memory, argument)  # NaN passes here and is refused as a fraction
    return _fraction(number, memory, argument)


def _parse_string(memory: str, argument: str) -> Budget:
    """A budget written as a string: ``"64MiB"``, ``"5%"``; a bare number has no unit and is refused."""
    match = _PATTERN.match(memory)
    if match is None:
        raise ValueError(
            f"{argument}={memory!r} is not a budget; write bytes with a unit such as '512KiB', "
            f"'64MiB', '1.5GB', or a percentage such as '5%'."
        )
    sign, digits, unit = match.group(1), match.group(2), match.group(3).lower()
    if unit not in _UNITS and unit not in ("", "%"):
        raise ValueError(
            f"{argument}={memory!r} has an unknown unit {match.group(3)!r}; write bytes with a unit "
            f"such as '512KiB', '64MiB', '1.5GB', or a percentage such as '5%'."
        )
    number = -float(digits) if sign else float(digits)
    _check_positive(number, memory, argument)
    if unit == "":
        raise ValueError(
            f"{argument}={memory!r} has no unit: write '{digits}%' for {digits}% of what standard "
            f"BPTT stores, or '{digits}B' for {digits} bytes (other units: KiB, MiB, GiB, KB, MB, GB)."
        )
    if unit == "%":
        return _fraction(number / 100, memory, argument)
    if not math.isfinite(number):
        raise ValueError(f"{argument}={memory!r} is not a finite number of bytes.")
    return Budget("bytes", int(number * _UNITS[unit]))


def _check_positive(number: float, memory, argument: str) -> None:
    """Refuse a negative or zero budget, quoting ``memory`` as the user wrote it."""
    if number < 0:
        raise ValueError(f"{argument}={memory!r} is negative; a budget is positive: {_ACCEPTED}.")
    if number == 0:
        raise ValueError(f"{argument}={memory!r} must be positive.")


def _fraction(number: float, memory, argument: str) -> Budget:
    """A relative budget: ``number`` must lie in (0, 1]; ``memory`` (as written) is quoted if it does not."""
    if math.isnan(number) or not 0 < number <= 1:
        raise ValueError(
            f"{argument}={memory!r}: a relative budget is a fraction of what standard BPTT stores "
            f"and must lie in (0, 1] (above 0%, at most 100%); pass an int for bytes or a string "
            f"such as '64MiB'."
        )
    return Budget("fraction", number)


def format_bytes(count: float) -> str:
    """``1536 -> '1.5 KiB'``."""
    count = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.4g} {unit}"
        count /= 1024
    return f"{count:.4g} GiB"  # pragma: no cover
