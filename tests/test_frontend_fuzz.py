"""Random mutations of the examples never produce a traceback: load -> validate -> compile end to end.

Two kinds of mutation: on the YAML text (characters inserted, deleted, replaced, lines duplicated)
and on the data tree (values replaced by random JSON or by CEL-looking strings, keys deleted), the
latter written back as YAML so that every stage of the front end gets to see it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsl.diagnostics import Diagnostic
from dsl.frontend import compile_file

EXAMPLES = sorted(
    p for p in (Path(__file__).parent.parent / "examples").glob("*.yaml") if ".responses." not in p.name
)
TEXTS = {p.name: p.read_text(encoding="utf-8") for p in EXAMPLES}

SNIPPETS = [
    "${{",
    "}}",
    "${{ steps.x.output }}",
    "${{ 1 / 0 }}",
    "{{ x }}",
    "{% for %}",
    "$${{",
    "'",
    '"',
    ":",
    "- ",
    "\t",
    "&a",
    "*a",
    "[",
    "{",
    "\n  ",
    "has(",
    "steps.",
    "input.",
    "role:",
    "*",
]

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_CELISH = st.builds(
    lambda parts: "".join(parts),
    st.lists(st.sampled_from(SNIPPETS + ["a", "1", " ", ".", "(", ")"]), max_size=8),
)


def _assert_clean(path: Path) -> None:
    graph, diags = compile_file(path)
    assert all(isinstance(d, Diagnostic) and d.message for d in diags)
    # CH299 is the compiler's "internal error" net: reaching it means a bug, not a bad file.
    assert not [d for d in diags if d.code == "CH299"], diags


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_text_mutations_never_raise(tmp_path_factory: Any, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(TEXTS)))
    text = TEXTS[name]
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text)))
        action = data.draw(st.sampled_from(["insert", "delete", "replace", "duplicate-line"]))
        if action == "insert":
            text = text[:at] + data.draw(st.sampled_from(SNIPPETS)) + text[at:]
        elif action == "delete":
            text = text[:at] + text[at + data.draw(st.integers(1, 20)) :]
        elif action == "replace":
            text = text[:at] + data.draw(st.text(max_size=3)) + text[at + 1 :]
        else:
            lines = text.splitlines(keepends=True)
            if lines:
                i = data.draw(st.integers(0, len(lines) - 1))
                lines.insert(i, lines[i])
                text = "".join(lines)
    path = tmp_path_factory.mktemp("mut") / name
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _assert_clean(path)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_tree_mutations_never_raise(tmp_path_factory: Any, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(TEXTS)))
    tree = copy.deepcopy(yaml.safe_load(TEXTS[name]))
    for _ in range(data.draw(st.integers(1, 3))):
        target = data.draw(st.sampled_from(_paths(tree)[1:]))
        parent = tree
        for part in target[:-1]:
            parent = parent[part]
        choice = data.draw(st.sampled_from(["delete", "json", "cel"]))
        if choice == "delete" and isinstance(parent, dict):
            del parent[target[-1]]
        else:
            parent[target[-1]] = data.draw(_JSON if choice == "json" else _CELISH)
    path = tmp_path_factory.mktemp("mut") / name
    path.write_text(yaml.safe_dump(tree, allow_unicode=True), encoding="utf-8", errors="surrogatepass")
    _assert_clean(path)
