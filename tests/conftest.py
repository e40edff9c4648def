"""Fixtures shared by the test modules: an event log in a real SQLite file of the test's own folder, and for
the agent tests a real OpenAI-compatible server and an environment free of provider settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from interpreter.store import SQLiteEventStore

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "charter.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SQLiteEventStore]:
    with SQLiteEventStore(db_path) as opened:
        yield opened


@pytest.fixture
def server() -> Iterator[Any]:
    """A real OpenAI-compatible server on 127.0.0.1 (tests/fixtures/openai_server.py)."""
    from fixtures.openai_server import OpenAIServer

    with OpenAIServer() as srv:
        yield srv


@pytest.fixture
def no_provider_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No model provider setting of the developer's reaches the run; the cwd is the repository, whose
    pyproject.toml allows examples.*."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.chdir(ROOT)
