"""Assemble ``corpus.txt``, the training text of ``python -m memjax demo``, from sources on this machine only.

Run from the repository root: ``python memjax/data/make_corpus.py``. No network access. The text is:

1. "The Zen of Python" (Tim Peters), decoded from the standard library's ``this`` module;
2. two public-domain passages written out here: the Preamble of the United States Constitution (1787) and
   Abraham Lincoln's Gettysburg Address (1863, Bliss copy);
3. the docstrings of a fixed list of pure-Python standard library modules and of their public functions and
   classes (``inspect.getdoc``), in a fixed order, restricted to printable ASCII.

Part 3 is (c) the Python Software Foundation and is redistributed under the PSF License Agreement (version 2);
see ``SOURCES.txt``. The exact text depends on the Python version that generated it (3.11 for the shipped file).
"""

from __future__ import annotations

import codecs
import importlib
import inspect
import pathlib
import re
import string

MODULES = (
    "textwrap",
    "string",
    "collections",
    "functools",
    "itertools",
    "heapq",
    "bisect",
    "json",
    "random",
    "statistics",
    "fractions",
    "decimal",
    "difflib",
    "argparse",
    "csv",
    "calendar",
    "datetime",
    "shlex",
    "pprint",
    "dataclasses",
    "enum",
    "abc",
    "contextlib",
    "copy",
    "fnmatch",
    "glob",
    "gzip",
    "zipfile",
    "tarfile",
    "logging",
    "unittest",
    "doctest",
    "inspect",
    "pathlib",
    "os",
    "shutil",
    "tempfile",
    "subprocess",
    "threading",
    "queue",
    "sched",
    "socket",
    "email.message",
    "http.client",
    "urllib.parse",
    "html",
    "xml.dom.minidom",
    "configparser",
    "pickle",
    "base64",
    "hashlib",
    "hmac",
    "secrets",
    "uuid",
    "typing",
    "weakref",
    "types",
    "operator",
    "numbers",
    "cmd",
    "code",
    "pdb",
    "timeit",
    "trace",
    "tokenize",
    "ast",
    "warnings",
    "traceback",
    "platform",
    "locale",
    "gettext",
    "getopt",
    "mailbox",
    "smtplib",
    "imaplib",
    "ftplib",
    "poplib",
    "wave",
    "colorsys",
    "graphlib",
    "zoneinfo",
    "ipaddress",
    "mimetypes",
    "quopri",
)
TARGET_BYTES = 200_000

PREAMBLE = """\
We the People of the United States, in Order to form a more perfect Union, establish Justice, insure domestic
Tranquility, provide for the common defence, promote the general Welfare, and secure the Blessings of Liberty to
ourselves and our Posterity, do ordain and establish this Constitution for the United States of America.
"""

GETTYSBURG = """\
Four score and seven years ago our fathers brought forth on this continent, a new nation, conceived in Liberty,
and dedicated to the proposition that all men are created equal.

Now we are engaged in a great civil war, testing whether that nation, or any nation so conceived and so
dedicated, can long endure. We are met on a great battle-field of that war. We have come to dedicate a portion of
that field, as a final resting place for those who here gave their lives that that nation might live. It is
altogether fitting and proper that we should do this.

But, in a larger sense, we can not dedicate -- we can not consecrate -- we can not hallow -- this ground. The
brave men, living and dead, who struggled here, have consecrated it, far above our poor power to add or detract.
The world will little note, nor long remember what we say here, but it can never forget what they did here. It is
for us the living, rather, to be dedicated here to the unfinished work which they who fought here have thus far so
nobly advanced. It is rather for us to be here dedicated to the great task remaining before us -- that from these
honored dead we take increased devotion to that cause for which they gave the last full measure of devotion --
that we here highly resolve that these dead shall not have died in vain -- that this nation, under God, shall have
a new birth of freedom -- and that government of the people, by the people, for the people, shall not perish from
the earth.
"""

_PRINTABLE = set(string.printable) - set("\r\x0b\x0c")


def _clean(text: str) -> str:
    text = "".join(c if c in _PRINTABLE else " " for c in text.replace("\t", "    "))
    text = re.sub(r"[ ]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def _docstrings(name: str):
    module = importlib.import_module(name)
    doc = inspect.getdoc(module)
    if doc:
        yield f"{name}\n{'=' * len(name)}\n\n{doc}\n"
    for attribute in sorted(getattr(module, "__all__", None) or dir(module)):
        if attribute.startswith("_"):
            continue
        obj = getattr(module, attribute, None)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)) or getattr(obj, "__module__", None) != name:
            continue
        doc = inspect.getdoc(obj)
        if doc and len(doc) > 40:
            yield f"{name}.{attribute}\n\n{doc}\n"


def build() -> str:
    import this  # noqa: F401  (prints the Zen once; the text is rot13-encoded in this.s)

    parts = [
        "The Zen of Python, by Tim Peters\n\n" + codecs.decode(this.s, "rot13").split("\n\n", 1)[-1],
        "Preamble to the Constitution of the United States\n\n" + PREAMBLE,
        "The Gettysburg Address, Abraham Lincoln, November 19, 1863\n\n" + GETTYSBURG,
    ]
    size = sum(len(p) for p in parts)
    seen = set()
    for name in MODULES:
        for doc in _docstrings(name):
            doc = _clean(doc)
            if doc in seen:
                continue
            seen.add(doc)
            parts.append(doc)
            size += len(doc) + 1
            if size >= TARGET_BYTES:
                return _clean("\n\n".join(parts))
    return _clean("\n\n".join(parts))


if __name__ == "__main__":
    path = pathlib.Path(__file__).with_name("corpus.txt")
    text = build()
    path.write_text(text, encoding="ascii")
    print(f"wrote {path}: {len(text):,} characters, {len(set(text))} distinct")
