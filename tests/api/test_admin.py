"""Health, identity, users and the audit log; and the API with authentication off."""

from __future__ import annotations

from fastapi.testclient import TestClient

from flextrain.api.app import create_app
from flextrain.settings import Settings
from tests.api.conftest import stop_jobs
from tests.api.helpers import BASIC_JOB, Caller, assert_error, create_job

JOBS = "/api/training/jobs"


def test_health_needs_no_token(client: TestClient) -> None:
    response = client.get("/api/health")
    assert response.status_code == 200, response.text
    health = response.json()
    assert health["status"] == "ok"
    assert health["database"] == "ok"
    assert health["auth"] is True
    assert health["version"]


def test_me_names_the_caller_and_role(client: TestClient, callers: dict[str, Caller]) -> None:
    for caller in callers.values():
        response = client.get("/api/me", headers=caller.headers)
        assert response.status_code == 200, response.text
        assert response.json() == {"name": caller.name, "role": caller.role}


# -- users -----------------------------------------------------------------------------


def test_admin_lists_users_without_their_tokens(
    client: TestClient, callers: dict[str, Caller]
) -> None:
    response = client.get("/api/users", headers=callers["admin"].headers)
    assert response.status_code == 200, response.text
    users = {u["name"]: u for u in response.json()}
    assert {name: u["role"] for name, u in users.items()} == {
        c.name: c.role for c in callers.values()
    }
    for caller in callers.values():
        assert caller.token not in response.text
        assert users[caller.name]["revoked_at"] is None
        assert "token" not in users[caller.name]
        assert caller.token.startswith(users[caller.name]["token_hint"].rstrip("…"))


def test_admin_creates_a_user_whose_token_works(client: TestClient, admin: Caller) -> None:
    response = client.post(
        "/api/users", json={"name": "newbie", "role": "viewer"}, headers=admin.headers
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["user"]["name"] == "newbie"
    assert created["user"]["role"] == "viewer"
    token = created["token"]
    assert token.startswith("ft_")
    assert len(token) > 40

    me = client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json() == {"name": "newbie", "role": "viewer"}
    listed = client.get("/api/users", headers=admin.headers).json()
    assert "newbie" in [u["name"] for u in listed]

    default_role = client.post("/api/users", json={"name": "worker"}, headers=admin.headers)
    assert default_role.status_code == 201
    assert default_role.json()["user"]["role"] == "trainer"


def test_creating_a_bad_or_taken_user_is_422(client: TestClient, admin: Caller) -> None:
    bad = client.post("/api/users", json={"name": "bad name!"}, headers=admin.headers)
    assert_error(bad, 422, "User name 'bad name!' is not valid")
    taken = client.post("/api/users", json={"name": "ada"}, headers=admin.headers)
    assert_error(taken, 422, "A user named 'ada' already exists")
    role = client.post("/api/users", json={"name": "x", "role": "god"}, headers=admin.headers)
    error = assert_error(role, 422, "role")
    assert [e["field"] for e in error["errors"]] == ["role"]


def test_revoked_token_is_refused(client: TestClient, admin: Caller, trainer: Caller) -> None:
    assert client.get("/api/me", headers=trainer.headers).status_code == 200
    response = client.post("/api/users/tom/revoke", headers=admin.headers)
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "tom"
    assert response.json()["revoked_at"] is not None

    refused = client.get("/api/me", headers=trainer.headers)
    assert_error(refused, 401, "The token is not valid or was revoked")
    assert refused.headers["www-authenticate"] == "Bearer"
    create = client.post(f"{JOBS}/basic", json=BASIC_JOB, headers=trainer.headers)
    assert_error(create, 401)
    assert client.get(JOBS, headers=admin.headers).json() == []


def test_revoking_an_unknown_user_is_404(client: TestClient, admin: Caller) -> None:
    response = client.post("/api/users/nobody/revoke", headers=admin.headers)
    assert_error(response, 404, "No user named 'nobody'.")


def test_user_management_is_admin_only(client: TestClient, trainer: Caller, viewer: Caller) -> None:
    for caller in (trainer, viewer):
        needed = f"Your role '{caller.role}' may not do this; it needs 'admin' or higher."
        assert_error(client.get("/api/users", headers=caller.headers), 403, needed)
        create = client.post("/api/users", json={"name": "sneaky"}, headers=caller.headers)
        assert_error(create, 403, needed)
        revoke = client.post("/api/users/vic/revoke", headers=caller.headers)
        assert_error(revoke, 403, needed)
        assert_error(client.get("/api/audit", headers=caller.headers), 403, needed)
    assert client.get("/api/me", headers=viewer.headers).status_code == 200  # not revoked


# -- audit -----------------------------------------------------------------------------


def test_audit_records_mutations_and_refusals_but_not_reads(
    client: TestClient, admin: Caller, trainer: Caller, viewer: Caller
) -> None:
    job = create_job(client, trainer)
    job_id = job["job_id"]
    assert client.post(f"{JOBS}/{job_id}/start", headers=trainer.headers).status_code == 200
    assert client.post(f"{JOBS}/{job_id}/cancel", headers=trainer.headers).status_code == 200
    assert client.post(f"{JOBS}/basic", json=BASIC_JOB, headers=viewer.headers).status_code == 403
    assert client.get(JOBS).status_code == 401
    # Reads by every role: none of these may appear.
    for caller in (admin, trainer, viewer):
        assert client.get(JOBS, headers=caller.headers).status_code == 200
        assert client.get(f"{JOBS}/{job_id}", headers=caller.headers).status_code == 200

    response = client.get("/api/audit", headers=admin.headers)
    assert response.status_code == 200, response.text
    page = response.json()
    entries = page["items"]  # newest first
    assert page["total"] == len(entries) == 5
    rows = [
        (e["actor"], e["action"], e["target"], e["outcome"], e["status_code"], e["client"])
        for e in reversed(entries)
    ]
    assert rows == [
        ("tom", "POST /api/training/jobs/basic", job_id, "ok", 201, "testclient"),
        ("tom", "POST /api/training/jobs/{job_id}/start", job_id, "ok", 200, "testclient"),
        ("tom", "POST /api/training/jobs/{job_id}/cancel", job_id, "ok", 200, "testclient"),
        ("vic", "POST /api/training/jobs/basic", None, "denied", 403, "testclient"),
        (None, "GET /api/training/jobs", None, "denied", 401, "testclient"),
    ]
    start = next(e for e in entries if e["action"].endswith("/start"))
    assert start["detail"] == f"/api/training/jobs/{job_id}/start"
    assert all(e["at"] for e in entries)

    denied = client.get("/api/audit", params={"outcome": "denied"}, headers=admin.headers)
    assert [e["status_code"] for e in denied.json()["items"]] == [401, 403]
    toms = client.get("/api/audit", params={"actor": "tom"}, headers=admin.headers)
    assert len(toms.json()["items"]) == 3


# -- authentication off ----------------------------------------------------------------


def test_auth_disabled_acts_as_a_local_admin(settings: Settings) -> None:
    app = create_app(settings, auth=False)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            assert client.get("/api/health").json()["auth"] is False
            assert client.get("/api/me").json() == {"name": "local", "role": "admin"}
            created = client.post(f"{JOBS}/basic", json=BASIC_JOB)
            assert created.status_code == 201, created.text
            assert created.json()["owner"] == "local"
            listed = client.get(JOBS).json()
            assert [j["job_id"] for j in listed] == [created.json()["job_id"]]
            new_user = client.post("/api/users", json={"name": "later", "role": "viewer"})
            assert new_user.status_code == 201, new_user.text
            audit = client.get("/api/audit").json()["items"]
            assert [(e["actor"], e["action"]) for e in reversed(audit)] == [
                ("local", "POST /api/training/jobs/basic"),
                ("local", "POST /api/users"),
            ]
            # A token is neither needed nor checked.
            bogus = client.get("/api/me", headers={"Authorization": "Bearer nonsense"})
            assert bogus.json()["name"] == "local"
    finally:
        stop_jobs(app.state.service)
