"""A migrated database per test (SQLite, or PostgreSQL under `make test-postgres`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from flextrain.accounts.audit import AuditLog
from flextrain.accounts.users import UserStore
from flextrain.db import make_sessionmaker
from flextrain.migrations import make_engine
from flextrain.settings import Settings


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    settings.ensure_home()
    engine = make_engine(settings.resolved_database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Any]:
    return make_sessionmaker(engine)


@pytest.fixture
def users(sessions: sessionmaker[Any]) -> UserStore:
    return UserStore(sessions)


@pytest.fixture
def audit(sessions: sessionmaker[Any]) -> AuditLog:
    return AuditLog(sessions)
