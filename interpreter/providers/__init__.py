"""Model providers: the registry, plugins, and building a provider from a workflow's model declaration.

    provider = get_provider(workflow.models["default"], overrides.get("default"), secrets=..., base_dir=...)
    response = await provider.complete(ModelRequest(messages=(...), step="extract", turn=1))
    await provider.close()

Built-in providers: `openai`, `anthropic`, `scripted`. Others come from installed packages through the
`charter.providers` entry-point group: each entry point names a factory `(ProviderConfig) -> ModelProvider`.

Keys come from the environment (`api_key_env`, else OPENAI_API_KEY / ANTHROPIC_API_KEY) or from a declared
secret (`api_key_secret`, looked up in the `secrets` mapping the engine passes); never from the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from .base import (
    Message,
    ModelAuthError,
    ModelBadResponseError,
    ModelConfigError,
    ModelConnectionError,
    ModelError,
    ModelProvider,
    ModelRateLimitError,
    ModelRequest,
    ModelRequestError,
    ModelResponse,
    ModelScriptError,
    ModelServerError,
    ModelTimeoutError,
    ToolCall,
    ToolSpec,
    Usage,
    compute_cost,
)

__all__ = [
    "Message",
    "ModelAuthError",
    "ModelBadResponseError",
    "ModelConfigError",
    "ModelConnectionError",
    "ModelError",
    "ModelOverrideError",
    "ModelProvider",
    "ModelRateLimitError",
    "ModelRequest",
    "ModelRequestError",
    "ModelResponse",
    "ModelScriptError",
    "ModelServerError",
    "ModelTimeoutError",
    "ProviderConfig",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "compute_cost",
    "get_provider",
    "parse_model_override",
    "parse_model_spec",
    "register_provider",
]

ENTRY_POINT_GROUP = "charter.providers"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_DEFAULT_KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
_DEFAULT_URL_ENV = {"openai": "OPENAI_BASE_URL", "anthropic": "ANTHROPIC_BASE_URL"}
# Parameters every provider reads alike, which a model moved to another provider by `--model` keeps.
NEUTRAL_PARAMETERS = frozenset({"temperature", "top_p", "max_tokens"})


@dataclass(frozen=True)
class ProviderConfig:
    """A model declaration with overrides applied, the key resolved and paths made absolute: what a
    provider factory receives."""

    provider: str
    model: str | None = None
    base_url: str | None = None
    api_key: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    responses: Path | None = None
    timeout: float | None = None
    prices: Any = None
    # What an override to another provider or model left out of the declaration, as it was the declared
    # model's: "prices", "parameters.NAME" (see `resolve_config`).
    dropped: tuple[str, ...] = ()


ProviderFactory = Callable[[ProviderConfig], ModelProvider]
_registry: dict[str, ProviderFactory] = {}


def register_provider(name: str, factory: ProviderFactory) -> None:
    """Add or replace a provider at run time (plugins normally use the entry-point group instead)."""
    _registry[name] = factory


def _builtin(name: str) -> ProviderFactory | None:
    if name == "openai":
        from .openai import OpenAIProvider

        return lambda c: OpenAIProvider(
            model=_need_model(c),
            base_url=c.base_url,
            api_key=c.api_key,
            parameters=c.parameters,
            timeout=c.timeout,
        )
    if name == "anthropic":
        from .anthropic import AnthropicProvider

        return lambda c: AnthropicProvider(
            model=_need_model(c),
            base_url=c.base_url,
            api_key=c.api_key or "",
            parameters=c.parameters,
            timeout=c.timeout,
        )
    if name == "scripted":
        from .scripted import ScriptedProvider

        return lambda c: ScriptedProvider(responses=_need_responses(c), model=c.model)
    return None


def _plugin(name: str) -> ProviderFactory | None:
    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.name == name:
            try:
                return point.load()
            except Exception as exc:  # a broken plugin must not crash the run with a traceback
                raise ModelConfigError(name, point.value, f"cannot load the provider plugin: {exc}") from None
    return None


def provider_factory(name: str) -> ProviderFactory:
    factory = _registry.get(name) or _builtin(name) or _plugin(name)
    if factory is None:
        plugins = sorted(p.name for p in entry_points(group=ENTRY_POINT_GROUP))
        known = ["anthropic", "openai", "scripted", *sorted(_registry), *plugins]
        raise ModelConfigError(name, "-", f"unknown provider {name!r}; known providers: {', '.join(known)}")
    return factory


def get_provider(
    model_config: Any,
    overrides: Mapping[str, Any] | None = None,
    *,
    secrets: Mapping[str, str] | None = None,
    base_dir: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> ModelProvider:
    """Build the provider for one declared model (a `dsl.model.LanguageModel` or a mapping of its fields).

    `overrides` is the dict from `parse_model_override` for this model (command line wins over the file).
    `base_dir` is the workflow file's directory: a `responses` path in the file is relative to it, one
    given on the command line is relative to the current directory. Raises `ModelError` subclasses.
    """
    config = resolve_config(model_config, overrides, secrets=secrets, base_dir=base_dir, environ=environ)
    provider = provider_factory(config.provider)(config)
    if not isinstance(provider, ModelProvider):
        raise ModelConfigError(config.provider, "-", "the provider plugin did not return a ModelProvider")
    return provider


def resolve_config(
    model_config: Any,
    overrides: Mapping[str, Any] | None = None,
    *,
    secrets: Mapping[str, str] | None = None,
    base_dir: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> ProviderConfig:
    """The configuration of one model, `overrides` (command line) applied over the declaration.

    An override to another provider or another model keeps of the declaration only what holds for any
    model: the declared prices are the declared model's, so they go (a call's cost is then unknown, never
    reckoned at another model's prices), and so, for another provider, do the parameters other than
    `NEUTRAL_PARAMETERS` (another provider's API would refuse them or read them otherwise). `dropped`
    says what went. A `scripted` override is the exception: it stands in for the declared model, for
    tests and demos, so its canned usage is priced, and budgets count, as the declared model's would.
    """
    env = os.environ if environ is None else environ
    fields = _fields(model_config)
    if fields.get("responses") is not None:
        fields["responses"] = Path(base_dir or ".") / fields["responses"]
    dropped: list[str] = []
    if overrides:
        target = overrides.get("provider")
        other_provider = target not in (None, fields.get("provider"))
        if other_provider:
            # A different provider: what was specific to the old one no longer applies.
            for key in ("model", "base_url", "responses", "api_key_env", "api_key_secret"):
                fields.pop(key, None)
        other_model = other_provider or overrides.get("model") not in (None, fields.get("model"))
        if other_model and target != "scripted":
            dropped = _drop_declared(fields, other_provider)
        given = {k: v for k, v in overrides.items() if v is not None}
        fields.update(given)
        if overrides.get("responses") is not None:
            fields["responses"] = Path(overrides["responses"])
        dropped = [d for d in dropped if not _given(given, d)]
    provider = fields.get("provider")
    if not isinstance(provider, str) or not provider:
        raise ModelConfigError("?", "-", "the model declares no provider")
    timeout = fields.get("timeout")
    return ProviderConfig(
        provider=provider,
        model=fields.get("model"),
        base_url=_checked_url(provider, fields.get("base_url") or _env(env, _DEFAULT_URL_ENV.get(provider))),
        api_key=_header_safe(provider, _api_key(provider, fields, secrets or {}, env)),
        parameters=dict(fields.get("parameters") or {}),
        responses=fields.get("responses"),
        timeout=_seconds(timeout) if timeout is not None else None,
        prices=fields.get("prices"),
        dropped=tuple(dropped),
    )


def _drop_declared(fields: dict[str, Any], other_provider: bool) -> list[str]:
    """Take out of `fields` what belongs to the declared model only; the names of what went."""
    dropped = []
    if fields.get("prices") is not None:
        fields["prices"] = None
        dropped.append("prices")
    if other_provider:
        parameters = dict(fields.get("parameters") or {})
        fields["parameters"] = {k: v for k, v in parameters.items() if k in NEUTRAL_PARAMETERS}
        dropped += [f"parameters.{k}" for k in parameters if k not in NEUTRAL_PARAMETERS]
    return dropped


def _given(overrides: Mapping[str, Any], dropped: str) -> bool:
    """Whether the override gives itself what was dropped of the declaration ("prices", or
    "parameters.NAME"): an override given as a mapping may bring the new model's own."""
    what, _, name = dropped.partition(".")
    if what not in overrides:
        return False
    return not name or name in (overrides[what] or {})


def _fields(model_config: Any) -> dict[str, Any]:
    if model_config is None:
        return {}
    if isinstance(model_config, Mapping):
        return dict(model_config)
    # A pydantic LanguageModel: keep the objects (prices) as they are.
    return {name: getattr(model_config, name) for name in type(model_config).model_fields}


def _api_key(
    provider: str, fields: Mapping[str, Any], secrets: Mapping[str, str], env: Mapping[str, str]
) -> str | None:
    secret = fields.get("api_key_secret")
    if secret:
        if secret not in secrets:
            raise ModelAuthError(provider, "-", f"the secret {secret!r} holding the API key has no value")
        return secrets[secret]
    declared = fields.get("api_key_env")
    if declared:
        value = env.get(declared)
        if not value:
            raise ModelAuthError(
                provider, "-", f"the environment variable {declared} (api_key_env) is not set"
            )
        return value
    default = _DEFAULT_KEY_ENV.get(provider)
    key = env.get(default) if default else None
    if key:
        return key
    # A local OpenAI-compatible server (Ollama, vLLM, ...) needs no key; OpenAI itself and Anthropic do.
    if provider == "anthropic" or (
        provider == "openai" and not (fields.get("base_url") or env.get("OPENAI_BASE_URL"))
    ):
        raise ModelAuthError(
            provider, "-", f"no API key: set {default}, or declare api_key_env or api_key_secret on the model"
        )
    return None


def _header_safe(provider: str, key: str | None) -> str | None:
    """A key goes in an HTTP header, which holds ASCII only: refused at setup, never mid-run."""
    if key is not None and not (key.isascii() and key.isprintable()):
        raise ModelAuthError(provider, "-", "the API key has characters an HTTP header cannot hold")
    return key


def _checked_url(provider: str, url: Any) -> str | None:
    """A base URL that can be requested: refused when the run is set up, not at its first model call."""
    if url is None:
        return None
    import httpx  # here, not at import: `charter validate` loads no HTTP client

    try:
        parsed = httpx.URL(str(url))
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError("it needs http:// or https:// and a host")
        if parsed.port is not None and not 0 < parsed.port < 65536:
            raise ValueError(f"port {parsed.port} is out of range")
    except (httpx.InvalidURL, ValueError) as exc:
        raise ModelConfigError(provider, str(url), f"the base URL is not usable: {exc}") from None
    return str(url)


def _env(env: Mapping[str, str], name: str | None) -> str | None:
    return env.get(name) or None if name else None


def _seconds(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    from dsl.model import parse_duration

    return parse_duration(str(value))


def _need_model(config: ProviderConfig) -> str:
    if not config.model:
        raise ModelConfigError(config.provider, config.base_url or "-", "no model name is configured")
    return config.model


def _need_responses(config: ProviderConfig) -> Path:
    if config.responses is None:
        raise ModelConfigError("scripted", "-", "the scripted provider needs a responses file")
    return config.responses


# --- --model overrides --------------------------------------------------------------------------------


class ModelOverrideError(ValueError):
    """A malformed `--model` option."""


_USAGE = "write NAME=PROVIDER:MODEL, NAME=PROVIDER:MODEL@BASE_URL or NAME=scripted:FILE"


def parse_model_override(text: str) -> tuple[str, dict[str, Any]]:
    """`--model NAME=PROVIDER:MODEL@BASE_URL` (or `NAME=scripted:FILE`) as (NAME, override fields)."""
    name, sep, spec = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ModelOverrideError(f"--model {text!r}: missing 'NAME='; {_USAGE}")
    if not _NAME.match(name):
        raise ModelOverrideError(f"--model {text!r}: {name!r} is not a model name; {_USAGE}")
    return name, parse_model_spec(spec, option=text)


def parse_model_spec(spec: str, *, option: str | None = None) -> dict[str, Any]:
    """The part after `NAME=`: `PROVIDER:MODEL[@BASE_URL]` or `scripted:FILE`."""
    shown = f"--model {option or spec!r}"
    provider, sep, rest = spec.strip().partition(":")
    if not sep or not provider or not rest:
        raise ModelOverrideError(f"{shown}: {_USAGE}")
    if not _NAME.match(provider):
        raise ModelOverrideError(f"{shown}: {provider!r} is not a provider name; {_USAGE}")
    if provider == "scripted":
        return {"provider": "scripted", "responses": rest}
    # Model names may hold ':' (llama3.1:8b); the base URL is what follows '@http://' or '@https://'.
    at = rest.find("@http://")
    at = rest.find("@https://") if at < 0 else at
    model, base_url = (rest[:at], rest[at + 1 :]) if at >= 0 else (rest, None)
    if not model:
        raise ModelOverrideError(f"{shown}: the model name is empty; {_USAGE}")
    if base_url is None and "@" in rest:
        raise ModelOverrideError(f"{shown}: the base URL after '@' must start with http:// or https://")
    return {"provider": provider, "model": model, "base_url": base_url}
