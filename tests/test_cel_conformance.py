"""CEL conformance: every test of every `*.json` file in `CEL_CONFORMANCE_DIR`, one pytest test each.

The data is cel-spec's simple conformance suite converted to JSON (see the README beside the files).
Test ids are `file/section/name`. Skips and expected failures are named in `cel_conformance_skips.py`;
only tests needing protobuf message types are skipped here, automatically.

`python -m tests.test_cel_conformance` prints the pass rate with failures grouped by file and section.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import math
import os
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = REPO_ROOT.parent / "shared" / "cel-conformance"
PROTOBUF_REASON = "needs protobuf message types"


def conformance_dir() -> Path:
    """`CEL_CONFORMANCE_DIR` (relative to the cwd, else the repo root), or the default beside the repo."""
    configured = os.environ.get("CEL_CONFORMANCE_DIR")
    if not configured:
        return DEFAULT_DIR
    path = Path(configured)
    if path.is_absolute() or path.exists():
        return path
    return REPO_ROOT / path


def _load_skips() -> tuple[dict[str, str], dict[str, str]]:
    # Loaded by path so this works both under pytest's rootdir imports and `python -m`.
    spec = importlib.util.spec_from_file_location(
        "cel_conformance_skips", Path(__file__).with_name("cel_conformance_skips.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.SKIPS), dict(module.XFAILS)


SKIPS, XFAILS = _load_skips()

if not conformance_dir().is_dir() or not list(conformance_dir().glob("*.json")):
    if __name__ != "__main__":
        pytest.skip(f"no CEL conformance data in {conformance_dir()}", allow_module_level=True)

import dsl.expr as cel  # noqa: E402  (after the skip: the data decides whether this module runs at all)
from dsl.expr.errors import ExpressionError  # noqa: E402
from dsl.expr.types import parse_type  # noqa: E402
from dsl.expr.values import CelType, Duration, Timestamp, UInt  # noqa: E402


class NeedsProtobuf(Exception):
    """The test's data uses a protobuf message type that Charter does not implement."""


# ---------------------------------------------------------------------------------------------------
# Loading


@dataclass(frozen=True)
class Case:
    id: str
    file: str
    section: str
    data: Mapping[str, Any]


def load_cases(directory: Path) -> Iterator[Case]:
    for path in sorted(directory.glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        for section in document.get("section", []):
            for test in section.get("test", []):
                case_id = f"{path.stem}/{section.get('name', '')}/{test.get('name', '')}"
                yield Case(case_id, path.stem, section.get("name", ""), test)


# ---------------------------------------------------------------------------------------------------
# JSON type form -> CEL type notation (as accepted by dsl.expr.types.parse_type)

_PRIMITIVES = {
    "BOOL": "bool",
    "INT64": "int",
    "UINT64": "uint",
    "DOUBLE": "double",
    "STRING": "string",
    "BYTES": "bytes",
}
_WELL_KNOWN = {"TIMESTAMP": "google.protobuf.Timestamp", "DURATION": "google.protobuf.Duration"}
_MESSAGE_TYPES = {"google.protobuf.Timestamp", "google.protobuf.Duration"}


def type_text(t: Mapping[str, Any]) -> str:
    """CEL notation for a cel-spec `Type` in JSON form; raises NeedsProtobuf for message types."""
    if "primitive" in t:
        return _PRIMITIVES[t["primitive"]]
    if "list_type" in t:
        return f"list({type_text(t['list_type'].get('elem_type', {'dyn': {}}))})"
    if "map_type" in t:
        entry = t["map_type"]
        key = type_text(entry.get("key_type", {"dyn": {}}))
        return f"map({key}, {type_text(entry.get('value_type', {'dyn': {}}))})"
    if "message_type" in t:
        if t["message_type"] in _MESSAGE_TYPES:
            return t["message_type"]
        raise NeedsProtobuf(t["message_type"])
    if "well_known" in t:
        if t["well_known"] in _WELL_KNOWN:
            return _WELL_KNOWN[t["well_known"]]
        raise NeedsProtobuf(f"google.protobuf.{t['well_known']}")
    if "wrapper" in t:
        raise NeedsProtobuf(f"wrapper of {t['wrapper']}")
    if "type" in t:
        inner = t["type"]
        return f"type({type_text(inner)})" if inner else "type"
    if "dyn" in t:
        return "dyn"
    if "null" in t:
        return "null_type"
    if "error" in t:
        return "error"
    if "type_param" in t:
        return str(t["type_param"])
    if "abstract_type" in t:
        abstract = t["abstract_type"]
        params = [type_text(p) for p in abstract.get("parameter_types", [])]
        return f"{abstract['name']}({', '.join(params)})" if params else str(abstract["name"])
    raise ValueError(f"unknown type form: {json.dumps(t)}")


def declarations(test: Mapping[str, Any]) -> dict[str, str]:
    """Variable declarations of `type_env` (function declarations name no variables: ignored)."""
    return {
        decl["name"]: type_text(decl["ident"].get("type", {"dyn": {}}))
        for decl in test.get("type_env", [])
        if "ident" in decl
    }


# ---------------------------------------------------------------------------------------------------
# JSON value form -> CEL runtime values

_DURATION = re.compile(r"^(-)?(\d+)(?:\.(\d{1,9}))?s$")
_TIMESTAMP = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?([Zz]|[+-]\d\d:\d\d)$"
)


def parse_duration(text: str) -> Duration:
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"bad duration: {text!r}")
    sign, seconds, fraction = match.groups()
    nanos = int(seconds) * 1_000_000_000 + int((fraction or "").ljust(9, "0"))
    return Duration(-nanos if sign else nanos)


def parse_timestamp(text: str) -> Timestamp:
    match = _TIMESTAMP.match(text)
    if not match:
        raise ValueError(f"bad timestamp: {text!r}")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    zone = "+00:00" if zone in ("Z", "z") else zone
    moment = datetime.fromisoformat(f"{year}-{month}-{day}T{hour}:{minute}:{second}{zone}")
    seconds = int(moment.timestamp())
    return Timestamp(seconds * 1_000_000_000 + int((fraction or "").ljust(9, "0")))


def _double(raw: Any) -> float:
    if isinstance(raw, str):
        special = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
        return special[raw] if raw in special else float(raw)
    return float(raw or 0)


def _object(obj: Mapping[str, Any]) -> Any:
    kind = str(obj.get("@type", "")).rsplit("/", 1)[-1]
    if kind == "google.protobuf.Duration":
        return parse_duration(obj.get("value", "0s"))
    if kind == "google.protobuf.Timestamp":
        return parse_timestamp(obj.get("value", "1970-01-01T00:00:00Z"))
    raise NeedsProtobuf(kind or "object_value")


def to_value(v: Mapping[str, Any]) -> Any:
    """The CEL value of a cel-spec `Value` in JSON form."""
    if "int64_value" in v:
        return int(v["int64_value"] or 0)
    if "uint64_value" in v:
        return UInt(int(v["uint64_value"] or 0))
    if "double_value" in v:
        return _double(v["double_value"])
    if "bool_value" in v:
        return bool(v["bool_value"])
    if "string_value" in v:
        return str(v["string_value"] or "")
    if "bytes_value" in v:
        return base64.b64decode(v["bytes_value"] or "")
    if "null_value" in v:
        return None
    if "list_value" in v:
        return [to_value(item) for item in (v["list_value"] or {}).get("values", [])]
    if "map_value" in v:
        entries = (v["map_value"] or {}).get("entries", [])
        return {to_value(e.get("key", {})): to_value(e.get("value", {})) for e in entries}
    if "type_value" in v:
        return CelType(v["type_value"])
    if "object_value" in v:
        return _object(v["object_value"])
    if "enum_value" in v:
        raise NeedsProtobuf("enum_value")
    raise ValueError(f"unknown value form: {json.dumps(v)}")


# ---------------------------------------------------------------------------------------------------
# Exact typed comparison

_SCALARS = (bool, UInt, int, str, bytes, Timestamp, Duration, CelType)


def same(expected: Any, actual: Any) -> bool:
    """CEL-typed equality for test results: int, uint, double and bool never match each other."""
    if expected is None:
        return actual is None
    kind = type(expected)
    if kind is float:
        return type(actual) is float and (actual == expected or (math.isnan(actual) and math.isnan(expected)))
    if kind in _SCALARS:
        return type(actual) is kind and actual == expected
    if kind is list:
        return (
            type(actual) in (list, tuple)
            and len(actual) == len(expected)
            and all(same(e, a) for e, a in zip(expected, actual, strict=True))
        )
    if kind is dict:
        if not isinstance(actual, Mapping) or len(actual) != len(expected):
            return False
        pairs = list(actual.items())
        return all(any(same(k, ak) and same(v, av) for ak, av in pairs) for k, v in expected.items())
    raise TypeError(f"unexpected expected-value type {kind.__name__}")


def describe(value: Any) -> str:
    """A repr that shows CEL types: 1 vs 1u vs 1.0 vs true."""
    if type(value) is bool:
        return "true" if value else "false"
    if value is None:
        return "null"
    if type(value) in (list, tuple):
        return "[" + ", ".join(describe(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{describe(k)}: {describe(v)}" for k, v in value.items()) + "}"
    if type(value) is float:
        return f"{value!r} (double)"
    if type(value) is CelType:
        return f"type({value.name})"
    return f"{value!r} ({type(value).__name__})"


# ---------------------------------------------------------------------------------------------------
# Running one test

_PROTOBUF_NAMES = re.compile(
    r"TestAllTypes|TestRequired|NestedMessage|GlobalEnum|cel\.expr\.conformance|google\.api\.expr\.test|"
    r"\bprotobuf\.(?!Timestamp\b|Duration\b)[A-Z]\w*"
)


def protobuf_need(test: Mapping[str, Any]) -> str | None:
    """Why the test needs protobuf message types, or None when it does not."""
    text = f"{test.get('expr', '')} {test.get('container', '')}"
    match = _PROTOBUF_NAMES.search(text)
    if match:
        return match.group(0)
    try:
        declarations(test)
        for binding in test.get("bindings", {}).values():
            to_value(binding.get("value", {}))
        for key in ("value", "typed_result"):
            if key in test:
                result = test[key].get("result", {}) if key == "typed_result" else test[key]
                to_value(result) if result else None
        if "typed_result" in test and "deduced_type" in test["typed_result"]:
            type_text(test["typed_result"]["deduced_type"])
    except NeedsProtobuf as need:
        return str(need)
    return None


def expected_result(test: Mapping[str, Any]) -> tuple[str, Any]:
    """("error", None) when evaluation must fail, else ("value", the expected CEL value)."""
    if "eval_error" in test or "any_eval_errors" in test:
        return "error", None
    if "value" in test:
        return "value", to_value(test["value"])
    if "typed_result" in test and test["typed_result"].get("result"):
        return "value", to_value(test["typed_result"]["result"])
    if "typed_result" in test:
        return "any", None
    if "unknown" in test or "any_unknowns" in test:
        pytest.fail("unknown-value matchers are not supported by this harness")
    return "value", True


def run_case(test: Mapping[str, Any]) -> None:
    """Compile, check and evaluate one conformance test; pytest.fail on any mismatch."""
    need = protobuf_need(test)
    if need:
        pytest.skip(f"{PROTOBUF_REASON} ({need})")
    checked = not test.get("disable_check", False)
    source = test["expr"]
    try:
        program = cel.compile(
            source,
            declarations(test) if checked else None,
            macros=not test.get("disable_macros", False),
            container=test.get("container") or None,
        )
    except ExpressionError as error:
        phase = "check" if checked else "parse"
        pytest.fail(f"{phase} failed for {source!r}: {type(error).__name__}: {error}")
    if checked and "deduced_type" in test.get("typed_result", {}):
        want = parse_type(type_text(test["typed_result"]["deduced_type"]))
        assert str(program.type) == str(want), f"deduced type of {source!r}: {program.type}, expected {want}"
    if test.get("check_only", False):
        return
    kind, want_value = expected_result(test)
    bindings = {name: to_value(b.get("value", {})) for name, b in test.get("bindings", {}).items()}
    try:
        result = program.evaluate(bindings)
    except cel.EvaluationError as error:
        if kind == "error":
            return
        pytest.fail(f"{source!r} raised EvaluationError: {error}; expected {describe(want_value)}")
    if kind == "error":
        pytest.fail(f"{source!r} evaluated to {describe(result)}; expected an evaluation error")
    if kind == "value" and not same(want_value, result):
        pytest.fail(f"{source!r} evaluated to {describe(result)}; expected {describe(want_value)}")


def _params() -> list[Any]:
    if not conformance_dir().is_dir():
        return []
    params = []
    for case in load_cases(conformance_dir()):
        marks: list[Any] = []
        if case.id in SKIPS:
            marks.append(pytest.mark.skip(reason=SKIPS[case.id]))
        if case.id in XFAILS:
            marks.append(pytest.mark.xfail(reason=XFAILS[case.id], strict=True))
        params.append(pytest.param(case.data, id=case.id, marks=marks))
    return params


@pytest.mark.parametrize("test", _params())
def test_conformance(test: Mapping[str, Any]) -> None:
    run_case(test)


# ---------------------------------------------------------------------------------------------------
# Summary: python -m tests.test_cel_conformance [-v]


def _outcome(case: Case) -> tuple[str, str]:
    if case.id in SKIPS:
        return "skipped", SKIPS[case.id]
    try:
        run_case(case.data)
    except pytest.skip.Exception as skip:
        return ("protobuf" if str(skip.msg).startswith(PROTOBUF_REASON) else "skipped"), str(skip.msg)
    except (pytest.fail.Exception, AssertionError) as failure:
        return "failed", str(getattr(failure, "msg", failure))
    except Exception as error:  # an engine bug: report it rather than stop the summary
        return "crashed", f"{type(error).__name__}: {error}"
    return "passed", ""


def main(argv: list[str]) -> int:
    verbose = "-v" in argv
    if not conformance_dir().is_dir():
        print(f"no CEL conformance data in {conformance_dir()}")
        return 0
    counts: Counter[str] = Counter()
    failures: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for case in load_cases(conformance_dir()):
        outcome, message = _outcome(case)
        counts[outcome] += 1
        if outcome in ("failed", "crashed"):
            failures[f"{case.file}/{case.section}"].append((case.id, f"[{outcome}] {message}"))
    total = sum(counts.values())
    in_scope = total - counts["protobuf"]
    rate = 100 * counts["passed"] / in_scope if in_scope else 0.0
    print(
        f"{counts['passed']}/{in_scope} passed ({rate:.1f}% of tests not needing protobuf; {total} in all): "
        f"{counts['failed']} failed, {counts['crashed']} crashed, {counts['skipped']} skipped, "
        f"{counts['protobuf']} need protobuf"
    )
    for group, items in sorted(failures.items()):
        print(f"\n{group}: {len(items)} failing")
        for case_id, message in items:
            print(f"  {case_id}" + (f"\n      {message[:300]}" if verbose else ""))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
