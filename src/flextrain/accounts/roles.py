"""User roles: a plain enum, apart from the user table so that the CLI can name the
roles in its help without importing SQLAlchemy."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """What a user may do. Ordered: each role can do everything the one after can."""

    ADMIN = "admin"  # everything: users, audit log, expert mode, every job
    TRAINER = "trainer"  # create, start and cancel own jobs; register datasets
    VIEWER = "viewer"  # read only

    def allows(self, needed: Role) -> bool:
        order = [Role.VIEWER, Role.TRAINER, Role.ADMIN]
        return order.index(self) >= order.index(needed)
