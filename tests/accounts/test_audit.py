"""The audit log: append, read back newest first, filter, classify outcomes."""

from __future__ import annotations

import pytest

from flextrain.accounts.audit import AuditLog, outcome_for


def test_entries_come_back_newest_first_with_every_field(audit: AuditLog) -> None:
    audit.record(actor="alice", action="POST /api/jobs", target="job-1", status_code=201)
    audit.record(
        actor="bob",
        action="DELETE /api/jobs/job-1",
        target="job-1",
        status_code=403,
        client="10.0.0.7",
        detail="trainers cancel only their own jobs",
    )
    newest, oldest = audit.entries()
    assert (newest.actor, newest.outcome) == ("bob", "denied")
    assert newest.action == "DELETE /api/jobs/job-1"
    assert newest.status_code == 403
    assert newest.client == "10.0.0.7"
    assert newest.detail == "trainers cancel only their own jobs"
    assert (oldest.actor, oldest.target, oldest.outcome) == ("alice", "job-1", "ok")
    assert oldest.client is None
    assert oldest.detail is None
    assert newest.id > oldest.id
    assert newest.at >= oldest.at
    assert audit.count() == 2


def test_filters_limit_and_offset(audit: AuditLog) -> None:
    for i in range(5):
        audit.record(actor="alice", action=f"a{i}", status_code=200)
    audit.record(actor="bob", action="b0", status_code=401)
    audit.record(actor=None, action="anonymous", status_code=401)

    assert [e.action for e in audit.entries(actor="alice")] == ["a4", "a3", "a2", "a1", "a0"]
    assert [e.action for e in audit.entries(outcome="denied")] == ["anonymous", "b0"]
    assert [e.action for e in audit.entries(actor="bob", outcome="denied")] == ["b0"]
    assert audit.entries(actor="bob", outcome="ok") == []
    assert [e.action for e in audit.entries(limit=2)] == ["anonymous", "b0"]
    assert [e.action for e in audit.entries(limit=2, offset=2)] == ["a4", "a3"]
    assert audit.count() == 7


def test_outcome_comes_from_the_status_unless_given(audit: AuditLog) -> None:
    audit.record(actor="a", action="no status")
    audit.record(actor="a", action="server error", status_code=500)
    audit.record(actor="a", action="not found", status_code=404)
    audit.record(actor="a", action="cli refusal", outcome="rejected")
    outcomes = {e.action: e.outcome for e in audit.entries()}
    assert outcomes == {
        "no status": "ok",
        "server error": "error",
        "not found": "rejected",
        "cli refusal": "rejected",
    }


def test_long_values_are_cut_to_their_columns(audit: AuditLog) -> None:
    """PostgreSQL enforces the column lengths that SQLite ignores; the log must never fail."""
    audit.record(
        actor="u" * 80,
        action="GET /" + "a" * 300,
        target="t" * 600,
        client="c" * 150,
        detail="d" * 3000,
        status_code=200,
    )
    (entry,) = audit.entries()
    assert entry.actor == "u" * 64
    assert len(entry.action) == 200
    assert entry.action.startswith("GET /a")
    assert entry.target == "t" * 500
    assert entry.client == "c" * 100
    assert entry.detail == "d" * 2000


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, "ok"),
        (201, "ok"),
        (204, "ok"),
        (302, "ok"),
        (400, "rejected"),
        (401, "denied"),
        (403, "denied"),
        (404, "rejected"),
        (409, "rejected"),
        (422, "rejected"),
        (499, "rejected"),
        (500, "error"),
        (503, "error"),
    ],
)
def test_outcome_for_maps_status_codes(status: int, outcome: str) -> None:
    assert outcome_for(status) == outcome
