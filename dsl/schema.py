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

from dsl.model import LANGUAGE_VERSION, Workflow

SCHEMA_ID = f"https://charter.dev/schema/charter-{LANGUAGE_VERSION}.json"
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def generate_schema() -> dict[str, Any]:
    """The JSON Schema of a workflow file, with `$schema`, `$id`, titles and descriptions."""
    body = Workflow.model_json_schema(by_alias=True, mode="validation")
    _tidy(body)
    body.pop("title", None)
    description = body.pop("description", "")
    return {
        "$schema": DIALECT,
        "$id": SCHEMA_ID,
        "title": f"Charter workflow {LANGUAGE_VERSION}",
        "description": f"{description} Language specification: spec/charter-{LANGUAGE_VERSION}.md.",
        **body,
    }


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
