"""Fixtures shared by the test modules: an event log in a real SQLite file of the test's own folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from interpreter.store import SQLiteEventStore


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "charter.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SQLiteEventStore]:
    with SQLiteEventStore(db_path) as opened:
        yield opened
