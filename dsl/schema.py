"""The published JSON Schema (2020-12) of a Charter workflow file, generated from `dsl.model`.

`python -m dsl.schema > schema/charter.schema.json` regenerates the committed file; a test fails when it is
stale. Editors use it through the YAML language server: put
`# yaml-language-server: $schema=https://charter.dev/schema/charter-1.0.json` (or a relative path to the
file) on the first line of a workflow.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from dsl.model import DURATION_PATTERN, HOOKS, LANGUAGE_VERSION, Limits, Workflow

SCHEMA_ID = f"https://charter.dev/schema/charter-{LANGUAGE_VERSION}.json"
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def generate_schema() -> dict[str, Any]:
    """The JSON Schema of a workflow file, with `$schema`, `$id`, titles and descriptions."""
    body = Workflow.model_json_schema(by_alias=True, mode="validation")
    _tidy(body)
    _tighten(body)
    body.pop("title", None)
    description = body.pop("description", "")
    return {
        "$schema": DIALECT,
        "$id": SCHEMA_ID,
        "title": f"Charter workflow {LANGUAGE_VERSION}",
        "description": f"{description} Language specification: spec/charter-{LANGUAGE_VERSION}.md. {LIMITS}",
        **body,
    }


LIMITS = (
    "The schema checks a superset of what `charter validate` accepts; the validator is normative. A file "
    "that passes the schema gets no shape error (CH1xx) from `charter validate`, except: an integer written "
    "as a float (`attempts: 2.0` is an integer to JSON Schema, CH103 to charter); a switch whose "
    "`default: true` case is not last, or a join first-n whose `n` exceeds the number of branches (CH109: "
    "a position in a list, a comparison of two values); a for_each whose `as` and `index_as` are one name, "
    "written or by default (CH109); an embedded JSON Schema whose `$ref` does not "
    "resolve within it (CH111); a `regex` that is not valid RE2 (CH112)."
)


# --- what the generated schema does not say: rules the models check in validators -----------------------
#
# pydantic emits one subschema per field. The models' cross-field rules (`model_validator`s, CH109/CH110),
# key names of mappings, zero durations and embedded schemas' validity are added here, so that a file the
# schema accepts gets no CH1xx from `charter validate` except for the cases LIMITS names (tests/
# test_schema_parity.py checks this against tests/invalid/). The models treat an explicit null like an
# absent field, hence `_set` rather than plain `required`.

# "1h30m" with at least one non-zero digit: a duration must be longer than zero (CH106). No lookahead, so
# that every regex dialect editors use reads it.
_UNIT = "(?:ms|s|m|h|d)"
_PART = rf"\d+(?:\.\d+)?{_UNIT}"
_NONZERO_PART = rf"(?:\d*[1-9]\d*(?:\.\d+)?|\d+\.\d*[1-9]\d*){_UNIT}"
POSITIVE_DURATION_PATTERN = rf"^(?:{_PART})*{_NONZERO_PART}(?:{_PART})*$"
META_SCHEMA = "https://json-schema.org/draft/2020-12/schema"
_EMBEDDED_SCHEMA = "A JSON Schema (draft 2020-12)."
_TOOL_HOOKS = [h for h in HOOKS if h.startswith("tool.")]


def _set(key: str) -> dict[str, Any]:
    """`key` is present and not null."""
    return {"required": [key], "properties": {key: {"not": {"type": "null"}}}}


def _unset(key: str) -> dict[str, Any]:
    """`key` is absent or null."""
    return {"properties": {key: {"type": "null"}}}


def _is(key: str, *values: str) -> dict[str, Any]:
    return {"required": [key], "properties": {key: {"enum": list(values)}}}


def _when(condition: dict[str, Any], then: dict[str, Any], otherwise: dict[str, Any] | None = None) -> Any:
    rule = {"if": condition, "then": then}
    return rule if otherwise is None else {**rule, "else": otherwise}


def _exactly_one(*keys: str) -> list[dict[str, Any]]:
    return [_set(k) for k in keys]


_ONE_OF = {  # replaces the models' `json_schema_extra` oneOf, which counted `check: null` as present
    "Guardrail": _exactly_one("check", "regex", "schema", "limits"),
    "Tool": _exactly_one("python", "http", "mcp", "workflow"),
    "McpTool": _exactly_one("command", "url"),
    "Case": _exactly_one("when", "default"),
}
_RULES: dict[str, list[dict[str, Any]]] = {  # each mirrors a model_validator in dsl.model (CH109)
    "Limits": [{"anyOf": [_set(k) for k in Limits.model_fields]}],
    "Guardrail": [
        _when(
            _set("limits"),
            {"properties": {"on": {"type": "null"}, "action": {"enum": ["deny", "escalate", "warn"]}}},
            _set("on"),
        ),
        _when(_is("action", "redact"), _set("regex")),
        _when(_set("max_retries"), _is("action", "retry")),
        _when(_set("escalation"), _is("action", "escalate")),
    ],
    "LanguageModel": [
        _when(_is("provider", "scripted"), _set("responses")),
        _when(_is("provider", "openai", "anthropic"), {"allOf": [_unset("responses"), _set("model")]}),
        {"not": {"allOf": [_set("api_key_env"), _set("api_key_secret")]}},
    ],
    "HttpTool": [{"not": {"allOf": [_set("json"), _set("body")]}}],
    "Tool": [
        {
            "properties": {
                "guardrails": {
                    "items": {"properties": {"on": {"anyOf": [{"enum": _TOOL_HOOKS}, {"type": "null"}]}}}
                }
            }
        }
    ],
    "AgentSpec": [_when({"required": ["tools"], "properties": {"tools": {"minItems": 1}}}, _set("identity"))],
    "ParallelSpec": [_when(_is("join", "first-n"), _set("n"), _unset("n"))],
}


def _tighten(body: dict[str, Any]) -> None:
    defs = body["$defs"]
    for name, branches in _ONE_OF.items():
        defs[name]["oneOf"] = branches
    for name, rules in _RULES.items():
        defs[name]["allOf"] = rules
    # at most one default case (that it is the last one, JSON Schema cannot say)
    defs["SwitchStep"]["properties"]["switch"].update(
        {"contains": _set("default"), "minContains": 0, "maxContains": 1}
    )
    _tighten_nodes(body)


def _tighten_nodes(node: Any) -> None:
    if isinstance(node, dict):
        patterns = node.get("patternProperties")
        if isinstance(patterns, dict) and len(patterns) == 1 and "additionalProperties" not in node:
            # a mapping keyed by names: every key must be a name, and every entry is checked
            ((pattern, entry),) = patterns.items()
            del node["patternProperties"]
            node["propertyNames"] = {"pattern": pattern}
            node["additionalProperties"] = entry
        if node.get("pattern") == DURATION_PATTERN:
            node["pattern"] = POSITIVE_DURATION_PATTERN
            node["description"] = node["description"].replace("A duration:", "A duration longer than zero:")
        if node.get("x-charter-expr") == "cel":
            node["pattern"] = r"\S"  # not blank (CH103)
        if node.get("description") == _EMBEDDED_SCHEMA and node.get("type") == "object":
            node["$ref"] = META_SCHEMA  # an invalid schema is CH111
        for value in node.values():
            _tighten_nodes(value)
    elif isinstance(node, list):
        for value in node:
            _tighten_nodes(value)


def _tidy(node: Any) -> None:
    """Drop what pydantic adds that helps nobody: per-property titles ("Max Turns" above the description)
    and `default: null` on optional fields."""
    if isinstance(node, dict):
        props = node.get("properties")
        if isinstance(props, dict):
            for prop in props.values():
                if isinstance(prop, dict):
                    prop.pop("title", None)
                    if "default" in prop and prop["default"] is None:
                        del prop["default"]
        for value in node.values():
            _tidy(value)
    elif isinstance(node, list):
        for value in node:
            _tidy(value)


def schema_text() -> str:
    """The schema as committed: 2-space indented JSON with a final newline."""
    return json.dumps(generate_schema(), indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    sys.stdout.write(schema_text())


if __name__ == "__main__":
    main()
