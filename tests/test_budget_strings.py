"""Budgets as users write them (``memjax.parse_budget``): what parses, and what is refused with which message.

Pure parsing: nothing here compiles a JAX program.
"""

import re

import numpy as np
import pytest

import memjax
from memjax._budget import Budget, parse_budget


@pytest.mark.parametrize(
    "memory,expected",
    [
        ("5%", Budget("fraction", 0.05)),
        ("100%", Budget("fraction", 1.0)),
        (" 2.5 % ", Budget("fraction", 0.025)),
        ("5B", Budget("bytes", 5)),
        ("5b", Budget("bytes", 5)),
        ("512KiB", Budget("bytes", 512 * 2**10)),
        ("5 KiB", Budget("bytes", 5 * 2**10)),
        ("64MiB", Budget("bytes", 64 * 2**20)),
        ("64mib", Budget("bytes", 64 * 2**20)),
        ("1.5GB", Budget("bytes", 1_500_000_000)),
        ("2k", Budget("bytes", 2048)),
        ("1e3KB", Budget("bytes", 10**6)),
        (2**26, Budget("bytes", 2**26)),
        (np.int32(1000), Budget("bytes", 1000)),
        (0.05, Budget("fraction", 0.05)),
        (1.0, Budget("fraction", 1.0)),
        (np.float32(0.5), Budget("fraction", 0.5)),
    ],
)
def test_accepted_forms(memory, expected):
    assert parse_budget(memory) == expected


def test_none_is_the_callers_default():
    assert parse_budget(None) is None


@pytest.mark.parametrize("memory", ["5", "1.5", " 7 ", "100", "1e6"])
def test_a_bare_number_string_is_refused_with_accepted_suggestions(memory):
    with pytest.raises(ValueError) as error:
        parse_budget(memory)
    message = str(error.value)
    number = memory.strip()
    assert f"memory={memory!r}" in message and "no unit" in message, message
    suggestions = re.findall(r"'([^']*)'", message.split("no unit", 1)[1])
    assert f"{number}%" in suggestions and f"{number}B" in suggestions, message
    for suggestion in suggestions:  # every form the message suggests is one that parses
        parse_budget(suggestion.replace(number, "5"))  # 5 for the number keeps a percentage within 100%


def test_the_message_names_the_argument():
    with pytest.raises(ValueError, match=r"^budget='5' has no unit"):
        parse_budget("5", argument="budget")


@pytest.mark.parametrize(
    "memory",
    ["-1", "-5%", " -5 % ", "-64MiB", "-0.5%", "-1e3B", -1, -1024, np.int64(-3), -0.5, np.float32(-0.1), float("-inf")],
)
def test_negative_budgets_say_they_are_negative(memory):
    with pytest.raises(ValueError) as error:
        parse_budget(memory)
    message = str(error.value)
    assert message.startswith(f"memory={memory!r} is negative"), message


@pytest.mark.parametrize("memory", [0, 0.0, "0", "-0", "0B", "0%", "0KiB", "0.0MiB"])
def test_zero_budgets_must_be_positive(memory):
    with pytest.raises(ValueError, match=r"must be positive") as error:
        parse_budget(memory)
    assert "negative" not in str(error.value)


@pytest.mark.parametrize("memory", [1.5, 1.0000001, float("inf"), float("nan"), "150%", "1e400%"])
def test_fractions_outside_0_1(memory):
    with pytest.raises(ValueError, match=r"\(0, 1\]") as error:
        parse_budget(memory)
    assert f"memory={memory!r}" in str(error.value)  # the value as written, not the fraction it became


@pytest.mark.parametrize(
    "memory,reason",
    [
        ("lots", "is not a budget"),
        ("", "is not a budget"),
        ("MiB", "is not a budget"),
        ("1.2.3KiB", "is not a budget"),
        ("--5%", "is not a budget"),
        ("+5%", "is not a budget"),
        ("12 parsecs", "unknown unit 'parsecs'"),
        ("5 %%", "unknown unit '%%'"),
        ("5 bytes", "unknown unit 'bytes'"),
        ("1e400B", "not a finite number of bytes"),
    ],
)
def test_strings_that_are_not_budgets(memory, reason):
    with pytest.raises(ValueError, match=re.escape(reason)) as error:
        parse_budget(memory)
    assert f"memory={memory!r}" in str(error.value)


@pytest.mark.parametrize("memory", [True, False, [1], object(), b"5"])
def test_wrong_types(memory):
    with pytest.raises(ValueError, match=r"^memory must be bytes \(int\)"):
        parse_budget(memory)


def test_resolve():
    assert parse_budget("5%").resolve(1000) == 50
    assert parse_budget("3KiB").resolve(10) == 3072


@pytest.mark.parametrize("entry", [memjax.scan, memjax.plan_scan, memjax.explain])
def test_the_public_entries_refuse_a_bare_number(entry):
    """The check runs before any tracing: the step here could not even be traced."""

    def step(carry, x):
        raise AssertionError("traced before the budget was checked")

    with pytest.raises(ValueError, match=r"memory='5' has no unit.*'5%'.*'5B'"):
        entry(step, np.zeros(2, np.float32), np.zeros((3, 2), np.float32), memory="5")
