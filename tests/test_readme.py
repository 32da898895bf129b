"""Every ```python block of README.md runs as written: each in a fresh namespace, in order, one test per block.

A block runs with the directory of its test as the working directory (files it writes, such as checkpoints,
land there) and with the README's own line numbers, so a traceback points at the README line that failed.

A block that is not meant to run (one that shows an error, say) starts with the line ``# not run: <reason>``:
it is only compiled, and its test is skipped with that reason. Use it rarely; a block that runs is the better
documentation.
"""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
NOT_RUN = "# not run:"

# An opening fence (possibly indented, as inside a list item) with the info string "python", up to the first
# closing fence of at least as many backticks.
_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<ticks>`{3,})[ \t]*python[ \t]*\n(?P<body>.*?)^[ \t]*(?P=ticks)`*[ \t]*$",
    re.MULTILINE | re.DOTALL,
)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line, source)`` of every ```python block of ``text``, in order; ``line`` is the first source line's."""
    blocks = []
    for match in _FENCE.finditer(text):
        indent = match.group("indent")
        lines = match.group("body").splitlines()
        source = "\n".join(line[len(indent) :] if line.startswith(indent) else line.lstrip() for line in lines)
        blocks.append((text.count("\n", 0, match.start("body")) + 1, source + "\n"))
    return blocks


def _test_id(index: int, source: str) -> str:
    first = next((line.strip() for line in source.splitlines() if line.strip()), "empty")
    return f"block{index}-" + re.sub(r"[^A-Za-z0-9_.]+", "_", first).strip("_")[:48]


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def test_the_readme_has_python_blocks():
    assert BLOCKS, f"no ```python block found in {README}"


def test_block_extraction():
    text = (
        "intro\n```python\nx = 1\n```\n\n```bash\nls\n```\n- item:\n\n  ```python\n  y = 2\n  ```\n"
        "````python\nz = '```'\n````\n"
    )
    assert python_blocks(text) == [(3, "x = 1\n"), (12, "y = 2\n"), (15, "z = '```'\n")]


@pytest.mark.parametrize(
    "line,source",
    [pytest.param(line, source, id=_test_id(index, source)) for index, (line, source) in enumerate(BLOCKS)],
)
def test_readme_block_runs(line, source, tmp_path, monkeypatch):
    # Blank lines in front give the README's line numbers; the filename lets tracebacks show README's lines.
    code = compile("\n" * (line - 1) + source, str(README), "exec")
    first = source.lstrip().splitlines()[0] if source.strip() else ""
    if first.startswith(NOT_RUN):
        pytest.skip(f"README.md line {line}: {first[len(NOT_RUN) :].strip()}")
    monkeypatch.chdir(tmp_path)
    exec(code, {"__name__": "__main__"})  # noqa: S102 - running the README's code is the test
