"""Audit log: who did what to which target, when, with what outcome, from where.

Every mutating request and every refused one is recorded by the API; the CLI
records its own user-management actions too. Entries are append-only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import DateTime, Integer, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column, sessionmaker

from flextrain.db import Base, as_utc


class AuditRecord(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=lambda: datetime.now(UTC), index=True
    )
    actor: Mapped[str | None] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(200))
    target: Mapped[str | None] = mapped_column(String(500))
    outcome: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int | None] = mapped_column(Integer)
    client: Mapped[str | None] = mapped_column(String(100))
    detail: Mapped[str | None] = mapped_column(Text)


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str | None
    action: str
    target: str | None
    outcome: str  # "ok", "denied" (401/403), "rejected" (other 4xx), "error"
    status_code: int | None
    client: str | None
    detail: str | None

    @classmethod
    def from_record(cls, r: AuditRecord) -> AuditEntry:
        return cls(
            id=r.id,
            at=as_utc(r.at),
            actor=r.actor,
            action=r.action,
            target=r.target,
            outcome=r.outcome,
            status_code=r.status_code,
            client=r.client,
            detail=r.detail,
        )


def outcome_for(status_code: int) -> str:
    if status_code < 400:
        return "ok"
    if status_code in (401, 403):
        return "denied"
    if status_code < 500:
        return "rejected"
    return "error"


class AuditLog:
    def __init__(self, sessions: sessionmaker[Any]) -> None:
        self._sessions = sessions

    def record(
        self,
        *,
        actor: str | None,
        action: str,
        target: str | None = None,
        status_code: int | None = None,
        outcome: str | None = None,
        client: str | None = None,
        detail: str | None = None,
    ) -> None:
        if outcome is None:
            outcome = outcome_for(status_code) if status_code is not None else "ok"
        with self._sessions.begin() as session:
            session.add(
                AuditRecord(
                    actor=actor[:64] if actor else actor,
                    action=action[:200],
                    target=target[:500] if target else None,
                    outcome=outcome,
                    status_code=status_code,
                    client=client[:100] if client else None,
                    detail=detail[:2000] if detail else None,
                )
            )

    def entries(
        self,
        *,
        limit: int = 100,
        offset: int = 0,
        actor: str | None = None,
        outcome: str | None = None,
    ) -> list[AuditEntry]:
        """Newest first."""
        query = select(AuditRecord).order_by(AuditRecord.id.desc())
        if actor is not None:
            query = query.where(AuditRecord.actor == actor)
        if outcome is not None:
            query = query.where(AuditRecord.outcome == outcome)
        with self._sessions() as session:
            records = session.scalars(query.limit(limit).offset(offset)).all()
            return [AuditEntry.from_record(r) for r in records]

    def count(self) -> int:
        from sqlalchemy import func

        with self._sessions() as session:
            return int(session.scalar(select(func.count()).select_from(AuditRecord)) or 0)
