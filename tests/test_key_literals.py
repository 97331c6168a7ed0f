"""Key names are spelled only in metrics_store/redis/keys.py: a key literal elsewhere fails here.

The check reads the code (Python through `ast`, Lua string literals) of metrics_store/, api/
and workers/; tests and docs may spell keys. A string is a key literal when it holds the
store's hash tag followed by a segment (`{metrics}:queries`), or a colon-joined token with a
segment that keys.py uses (`:live:`, `x:q:10s`, an f-string `f"{root}:live:tick:{t}"`).
Prose such as `"live: stopping"` (one word and a colon) and URLs are not key literals, and
docstrings are documentation.
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from metrics_store.redis.keys import Keys

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("metrics_store", "api", "workers")
KEY_MODULE = ROOT / "metrics_store" / "redis" / "keys.py"
PLACEHOLDER = "X"  # stands for an f-string's {expression}
# "{metrics}:" followed by more: the store's root, as a literal or built by an f-string.
HASH_TAG = re.compile(r"\{[^{}\s]+\}:\S")
PROSE = re.compile(r"[^:]+:")  # "live:" as in "live: stopping", a key never ends in ":"
LUA_STRING = re.compile(r"'([^'\\]*)'|\"([^\"\\]*)\"")


def key_names() -> list[str]:
    """Every name keys.py builds, from a sample prefix."""
    keys = Keys(PLACEHOLDER)
    names = []
    for attr, value in vars(Keys).items():
        if attr.startswith("_") or attr in ("root", "control_root", "scan_pattern"):
            continue
        if isinstance(value, property):
            names.append(getattr(keys, attr))
        elif callable(value):
            params = list(inspect.signature(value).parameters.values())[1:]
            args = [1 if p.annotation == "int" else PLACEHOLDER for p in params]
            names.append(getattr(keys, attr)(*args))
    return names


def key_segments() -> frozenset[str]:
    """The words between the colons of the key names: "queries", "live", "q", "tick", ..."""
    root = Keys(PLACEHOLDER).root
    words = (part for name in key_names() for part in name.removeprefix(root).split(":"))
    return frozenset(w for w in words if re.fullmatch(r"[a-z_]+", w))


SEGMENTS = key_segments()


def is_key_literal(text: str) -> bool:
    """Whether `text` (a string constant, f-string placeholders as X) spells a key name."""
    if HASH_TAG.search(text):
        return True
    for token in text.split():
        token = token.strip("'\"`()[],;")
        if ":" not in token or PROSE.fullmatch(token):
            continue
        if any(part in SEGMENTS for part in token.split(":")):
            return True
    return False


def _docstrings(tree: ast.AST) -> set[int]:
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, kinds) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _fstring_text(node: ast.JoinedStr) -> str:
    return "".join(
        part.value if isinstance(part, ast.Constant) else PLACEHOLDER for part in node.values
    )


def python_strings(source: str) -> Iterator[tuple[int, str]]:
    """(line, text) of each string in `source`: constants, and f-strings as a whole."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            skip.update(id(part) for part in node.values)  # judged as one string, here
            yield node.lineno, _fstring_text(node)
        elif isinstance(node, ast.FormattedValue) and node.format_spec is not None:
            skip.add(id(node.format_spec))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and id(node) not in skip:
            if isinstance(node.value, str):
                yield node.lineno, node.value
            elif isinstance(node.value, bytes):
                yield node.lineno, node.value.decode(errors="replace")


def lua_strings(source: str) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(source.splitlines(), start=1):
        code = line.split("--", 1)[0]
        for match in LUA_STRING.finditer(code):
            yield number, match.group(1) if match.group(1) is not None else match.group(2)


def key_literals(source: str, lua: bool = False) -> list[tuple[int, str]]:
    strings = lua_strings(source) if lua else python_strings(source)
    return [(line, text) for line, text in strings if is_key_literal(text)]


def code_files() -> Iterator[Path]:
    for package in SCANNED:
        for path in sorted((ROOT / package).rglob("*")):
            if path.suffix in (".py", ".lua") and path != KEY_MODULE:
                yield path


# --- the rule ------------------------------------------------------------------------------------
def test_no_key_literal_outside_the_key_module() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}: {text!r}"
        for path in code_files()
        for line, text in key_literals(path.read_text(), lua=path.suffix == ".lua")
    ]
    assert not found, "spell keys in metrics_store/redis/keys.py only:\n" + "\n".join(found)


def test_the_segments_come_from_the_key_module() -> None:
    assert {"queries", "routing", "q", "r", "live", "tick", "latest", "updates"} <= SEGMENTS
    assert "10s" not in SEGMENTS and PLACEHOLDER not in SEGMENTS


# --- the checker: it catches planted literals ... ------------------------------------------------
@pytest.mark.parametrize(
    "source",
    [
        'client.get("{metrics}:live:latest")',
        "pipe.publish(b'{metrics}:live:updates', payload)",
        'lock = f"{{{prefix}}}:live:tick:{tick}"',
        'lock = f"{root}:live:tick:{tick}"',
        'name = f"{root}:q:{size_s}s:{start}"',
        'stream = root + ":queries"',
        'client.zadd("{m}:live:nodes", {node: now})',
        'keys = [prefix + ":live:", node]',
    ],
)
def test_checker_catches_a_planted_key_literal(source: str) -> None:
    assert key_literals(source), source


def test_checker_reads_lua_strings_but_not_comments() -> None:
    source = """-- KEYS[1] = '{p}:live:nodes' in a comment is fine
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[6])
redis.call('GET', '{p}:live:latest')"""
    assert key_literals(source, lua=True) == [(3, "{p}:live:latest")]


# --- ... and leaves prose, URLs and docstrings alone ---------------------------------------------
@pytest.mark.parametrize(
    "source",
    [
        'log.error("live: %s stopped", name)',
        'log.warning("live relay: subscription lost (%s); resubscribing", exc)',
        'url = "redis://localhost:6379/0"',
        'f"http://{host}:{port}/api/metrics/queries"',
        'replica = f"{node}:{os.getpid()}:{secrets.token_hex(3)}"',
        'field = f"{node}:{tier}"',
        'def f():\n    """Reads {p}:live:latest and {p}:q:10s:<start>."""',
        'when = f"{hour:02d}:{minute:02d}"',
    ],
)
def test_checker_leaves_prose_and_urls_alone(source: str) -> None:
    assert not key_literals(source), source
