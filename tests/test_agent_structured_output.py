"""Model providers as a workflow meets them, against real HTTP servers on 127.0.0.1 and a real event log."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from interpreter import replay_run
from tests.fixtures.openai_server import OpenAIServer
from tests.test_agent import events, run, workflow

# No provider setting of the developer's (a key, a base URL) reaches these runs; examples.* is
# allowed by the project's pyproject.toml, in the repository's root.
pytestmark = pytest.mark.usefixtures("no_provider_env")


class ObjectRootsOnly(OpenAIServer):
    """Like api.openai.com: a `json_schema` response format whose schema's root is not an object is refused
    (and `json_object` always answers an object)."""

    def check(self, body: dict[str, Any]) -> tuple[int, Any] | None:
        fmt = body.get("response_format") or {}
        if fmt.get("type") == "json_schema" and fmt["json_schema"]["schema"].get("type") != "object":
            got = fmt["json_schema"]["schema"].get("type")
            message = (
                "Invalid schema for response_format 'answer': schema must be a JSON Schema of "
                f"'type: \"object\"', got 'type: \"{got}\"'."
            )
            return 400, {"error": {"message": message, "param": "response_format"}}
        return None


@pytest.fixture
def server() -> Iterator[ObjectRootsOnly]:
    with ObjectRootsOnly() as srv:
        yield srv


CLASSIFY = """
steps:
  - id: classify
    llm:
      prompt: "Classify: {{{{ q }}}}"
      vars: {{q: "${{{{ input.q }}}}"}}
      output_schema: {schema}
output: {{intent: "${{{{ steps.classify.output }}}}"}}
"""


@pytest.mark.parametrize(
    ("schema", "answer", "expected"),
    [
        ("{enum: [billing, technical, other]}", '"billing"', "billing"),
        ("{type: array, items: {type: string}}", '["a", "b"]', ["a", "b"]),
    ],
)
def test_an_answer_that_is_not_an_object_is_asked_for_inside_one(
    tmp_path: Path, server: ObjectRootsOnly, schema: str, answer: str, expected: Any
) -> None:
    """A classifier's `output_schema: {enum: [...]}` (or a list) was sent as the root of a `json_schema`
    response format, which OpenAI refuses; the fallback, `json_object`, can only answer an object, so
    the step failed after its re-asks. The answer is now asked for as {"value": ...} and unwrapped."""
    server.reply('{"value": ' + answer + "}", usage=(30, 5))
    body = CLASSIFY.format(schema=schema)
    result, store = run(tmp_path, workflow(tmp_path, server.url, body), {"q": "charged twice"})
    assert result.status == "completed", result.error
    assert result.output == {"intent": expected}
    (request,) = server.requests
    sent = request["response_format"]["json_schema"]["schema"]
    assert sent["type"] == "object" and sent["required"] == ["value"]
    (completed,) = events(store, result.run_id, "model.completed")
    assert completed["response"]["structured"] == expected
    assert json.loads(completed["response"]["text"]) == expected
    assert replay_run(result.run_id, store=store).ok


def test_an_object_answer_is_asked_for_as_it_is(tmp_path: Path, server: ObjectRootsOnly) -> None:
    server.reply('{"intent": "billing"}')
    body = CLASSIFY.format(schema="{type: object, properties: {intent: {type: string}}}")
    result, _ = run(tmp_path, workflow(tmp_path, server.url, body), {"q": "x"})
    assert result.status == "completed", result.error
    assert result.output == {"intent": {"intent": "billing"}}
    (request,) = server.requests
    assert request["response_format"]["json_schema"]["schema"]["properties"] == {"intent": {"type": "string"}}
