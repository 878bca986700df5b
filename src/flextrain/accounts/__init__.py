"""Users, roles, bearer tokens and the audit log (services layer, no web code)."""
