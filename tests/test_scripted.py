"""The scripted provider, the provider registry (with a real entry-point plugin) and --model overrides."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path
from typing import Any

import pytest

from interpreter.providers import (
    Message,
    ModelAuthError,
    ModelConfigError,
    ModelOverrideError,
    ModelRequest,
    ModelResponse,
    ModelScriptError,
    ToolCall,
    Usage,
    get_provider,
    parse_model_override,
    resolve_config,
)
from interpreter.providers.scripted import ScriptedProvider

ROOT = Path(__file__).resolve().parent.parent
SEQUENTIAL = ROOT / "examples" / "sequential.responses.yaml"


def call(provider: Any, step: str, turn: int = 1, schema: dict | None = None) -> ModelResponse:
    request = ModelRequest(messages=(Message("user", "go"),), step=step, turn=turn, response_schema=schema)
    return asyncio.run(provider.complete(request))


def write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_sequential_example_answers_in_order() -> None:
    provider = ScriptedProvider(responses=SEQUENTIAL)
    extract = call(provider, "extract", schema={"type": "object"})
    assert extract.structured == {
        "parties": ["ACME Corp", "Globex"],
        "total_value": 1250000,
        "end_date": "2027-06-30",
    }
    assert extract.usage == Usage(850, 60)
    analyze = call(provider, "analyze", 1)
    assert analyze.text is None
    assert analyze.tool_calls == (
        ToolCall("analyze-1-1-1", "lookup_company", {"name": "ACME Corp"}),
        ToolCall("analyze-1-1-2", "lookup_company", {"name": "Globex"}),
    )
    assert analyze.finish_reason == "tool_calls"
    assert call(provider, "analyze", 2).text.startswith("Risk: medium.")
    assert "Recommend a payment guarantee" in call(provider, "report").text


def test_exhausted_script_is_a_clear_error() -> None:
    provider = ScriptedProvider(responses=SEQUENTIAL)
    call(provider, "report")
    with pytest.raises(ModelScriptError) as caught:
        call(provider, "report")
    assert str(caught.value) == (
        f"scripted model call to {SEQUENTIAL} failed: "
        "scripted responses exhausted for step 'report' turn 1 (all 1 entries used)"
    )


def test_no_matching_entry_names_what_the_file_has() -> None:
    provider = ScriptedProvider(responses=SEQUENTIAL)
    with pytest.raises(
        ModelScriptError, match=r"no scripted response for step 'analyze' turn 3; the file has turns \[1, 2\]"
    ):
        call(provider, "analyze", 3)
    with pytest.raises(
        ModelScriptError,
        match=r"step 'summarize' turn 1; the file has entries for steps \['analyze', 'extract', 'report'\]",
    ):
        call(provider, "summarize")


def test_entries_sharing_step_and_turn_are_used_in_file_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        responses:
          - {step: each, text: first}
          - {step: other, text: unrelated}
          - {step: each, turn: 1, text: second}
        """,
    )
    provider = ScriptedProvider(responses=path)
    assert [call(provider, "each").text for _ in range(2)] == ["first", "second"]


def test_mark_used_skips_entries_taken_from_the_log(tmp_path: Path) -> None:
    path = write(tmp_path, "responses:\n  - {step: s, text: a}\n  - {step: s, text: b}\n")
    provider = ScriptedProvider(responses=path)
    provider.mark_used("s", 1)
    assert call(provider, "s").text == "b"


def test_text_answer_parses_as_structured_when_a_schema_is_asked(tmp_path: Path) -> None:
    path = write(tmp_path, """responses:\n  - {step: s, text: '{"a": 1}'}\n""")
    assert call(ScriptedProvider(responses=path), "s", schema={"type": "object"}).structured == {"a": 1}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("responses: [", "not valid YAML"),
        ("answers: []", "needs a top-level 'responses:' list"),
        (
            "responses:\n  - {text: hi}\n",
            r"entry at line 2: 'step' \(the id of the agent or llm step\) is required",
        ),
        (
            "responses:\n  - {step: s, text: a, json: {}}\n",
            r"needs exactly one of text, json, tool_calls \(found \['text', 'json'\]\)",
        ),
        ("responses:\n  - {step: s}\n", "needs exactly one of text, json, tool_calls"),
        ("responses:\n  - {step: s, turn: 0, text: a}\n", "'turn' must be an integer from 1, not 0"),
        ("responses:\n  - {step: s, text: a, extra: 1}\n", r"unknown key\(s\) \['extra'\]"),
        ("responses:\n  - {step: s, tool_calls: [{args: {}}]}\n", "tool call 1 needs a 'name'"),
        ("responses:\n  - {step: s, text: a, usage: {input_tokens: -1}}\n", "non-negative integers"),
        ("responses:\n  - {step: s, json: {n: .nan}}\n", "'json' must be JSON: no .nan"),
        ("responses:\n  - {step: s, json: {1: a}}\n", "'json' must be JSON"),
        (
            "responses:\n  - {step: s, tool_calls: [{name: f, args: {x: .inf}}]}\n",
            "tool call 1 'args' must be JSON",
        ),
    ],
)
def test_malformed_responses_file_fails_when_loaded(tmp_path: Path, content: str, message: str) -> None:
    path = write(tmp_path, content)
    with pytest.raises(ModelConfigError, match=message):
        ScriptedProvider(responses=path)


def test_missing_responses_file(tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match="the responses file does not exist"):
        ScriptedProvider(responses=tmp_path / "nope.yaml")


def test_every_example_responses_file_loads() -> None:
    for path in sorted((ROOT / "examples").glob("*.responses.yaml")):
        ScriptedProvider(responses=path)


# --- registry and configuration -----------------------------------------------------------------------


def test_declared_scripted_model_is_relative_to_the_workflow(tmp_path: Path) -> None:
    write(tmp_path, "responses:\n  - {step: s, text: from file}\n", "flow.responses.yaml")
    provider = get_provider({"provider": "scripted", "responses": "flow.responses.yaml"}, base_dir=tmp_path)
    assert call(provider, "s").text == "from file"


def test_command_line_override_replaces_the_provider(tmp_path: Path) -> None:
    declared = {
        "provider": "openai",
        "model": "gpt-x",
        "api_key_env": "NOT_SET_ANYWHERE",
        "parameters": {"temperature": 0},
    }
    script = write(tmp_path, "responses:\n  - {step: s, text: overridden}\n")
    name, override = parse_model_override(f"default=scripted:{script}")
    assert name == "default"
    provider = get_provider(declared, override, environ={})
    assert isinstance(provider, ScriptedProvider) and call(provider, "s").text == "overridden"


def test_override_to_openai_drops_the_scripted_fields() -> None:
    _, override = parse_model_override("default=openai:llama3.1:8b@http://localhost:11434/v1")
    config = resolve_config(
        {"provider": "scripted", "responses": "r.yaml", "timeout": "30s"}, override, environ={}
    )
    assert (config.provider, config.model, config.base_url) == (
        "openai",
        "llama3.1:8b",
        "http://localhost:11434/v1",
    )
    assert config.responses is None and config.api_key is None and config.timeout == 30.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("m=openai:gpt-4.1-mini", ("m", {"provider": "openai", "model": "gpt-4.1-mini", "base_url": None})),
        (
            "fast=anthropic:claude-x@https://proxy.example/v1",
            ("fast", {"provider": "anthropic", "model": "claude-x", "base_url": "https://proxy.example/v1"}),
        ),
        ("default=scripted:tests/r.yaml", ("default", {"provider": "scripted", "responses": "tests/r.yaml"})),
    ],
)
def test_parse_model_override(text: str, expected: tuple[str, dict]) -> None:
    assert parse_model_override(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("openai:gpt", "missing 'NAME='"),
        ("m=gpt", "write NAME=PROVIDER:MODEL"),
        ("m=openai:", "write NAME=PROVIDER:MODEL"),
        ("m=openai:gpt@localhost:8080", "must start with http:// or https://"),
        ("1m=openai:gpt", "is not a model name"),
    ],
)
def test_malformed_override_is_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(ModelOverrideError, match=message):
        parse_model_override(text)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://[::1", "Invalid port"),
        ("http://127.0.0.1:99999/v1", "port 99999 is out of range"),
        ("localhost:8080/v1", "it needs http:// or https:// and a host"),
    ],
)
def test_a_base_url_that_cannot_be_requested_is_refused_at_setup(url: str, message: str) -> None:
    with pytest.raises(ModelConfigError, match=f"the base URL is not usable: {message}"):
        resolve_config({"provider": "openai", "model": "g", "base_url": url}, environ={})


def test_a_key_no_http_header_can_hold_is_refused_at_setup() -> None:
    with pytest.raises(ModelAuthError, match="the API key has characters an HTTP header cannot hold"):
        get_provider({"provider": "openai", "model": "g", "api_key_env": "K"}, environ={"K": "sk-clé"})


def test_keys_come_from_env_or_secrets_never_silently_missing() -> None:
    with pytest.raises(ModelAuthError, match="no API key: set ANTHROPIC_API_KEY"):
        get_provider({"provider": "anthropic", "model": "c"}, environ={})
    with pytest.raises(
        ModelAuthError, match=r"openai model: the environment variable MY_KEY \(api_key_env\) is not set"
    ):
        get_provider({"provider": "openai", "model": "g", "api_key_env": "MY_KEY"}, environ={})
    with pytest.raises(ModelAuthError, match="the secret 'llm_key' holding the API key has no value"):
        get_provider({"provider": "openai", "model": "g", "api_key_secret": "llm_key"}, environ={})
    config = resolve_config(
        {"provider": "openai", "model": "g", "api_key_secret": "llm_key"}, secrets={"llm_key": "s3"}
    )
    assert config.api_key == "s3"
    # A local server needs no key.
    assert (
        resolve_config(
            {"provider": "openai", "model": "g", "base_url": "http://127.0.0.1:1/v1"}, environ={}
        ).api_key
        is None
    )


def test_unknown_provider_lists_the_known_ones() -> None:
    with pytest.raises(
        ModelConfigError, match="unknown provider 'nosuch'; known providers: anthropic, openai, scripted"
    ):
        get_provider({"provider": "nosuch", "model": "x"}, environ={})


def test_entry_point_plugin_provides_a_provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real installed-distribution layout on sys.path: importlib.metadata finds its entry point.
    (tmp_path / "charter_echo_plugin.py").write_text(
        textwrap.dedent(
            """
            from interpreter.providers import ModelResponse

            class Echo:
                name = "echo"

                def __init__(self, config):
                    self.model = config.model

                async def complete(self, request):
                    return ModelResponse(text=f"{self.model}: {request.messages[-1].content}")

                async def close(self):
                    pass

            def make(config):
                return Echo(config)
            """
        ),
        encoding="utf-8",
    )
    dist = tmp_path / "charter_echo_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: charter-echo-plugin\nVersion: 0.1\n", encoding="utf-8"
    )
    (dist / "entry_points.txt").write_text(
        "[charter.providers]\necho = charter_echo_plugin:make\n", encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    provider = get_provider({"provider": "echo", "model": "parrot"})
    assert call(provider, "s").text == "parrot: go"
