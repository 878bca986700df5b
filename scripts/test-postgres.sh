#!/usr/bin/env bash
# Run the database-facing tests against a real PostgreSQL: a throw-away cluster
# in a temp folder, on 127.0.0.1 and a free port, removed at the end whatever
# the tests did. Extra arguments go to pytest (e.g. -x, -k name);
# FLEXTRAIN_PG_TESTS="tests/db" runs other folders than the default ones.
#
# PostgreSQL refuses to run as root, so as root (CI, the dev machines) the
# cluster belongs to the `postgres` user that Debian's package creates.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
read -ra TEST_DIRS <<<"${FLEXTRAIN_PG_TESTS:-tests/jobs tests/accounts tests/db tests/api}"

pg_bin() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [[ -n "$dir" && -x "$dir/initdb" ]] && echo "$dir"
}

BIN=$(pg_bin || true)
if [[ -z "$BIN" ]]; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "PostgreSQL is not installed. Fix: sudo apt-get install -y postgresql" >&2
        exit 1
    fi
    echo "Installing PostgreSQL from Debian packages..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
    BIN=$(pg_bin)
fi

# As root, run the server tools as `postgres`; as anyone else, as oneself.
# (From the cluster's folder: `postgres` may not be allowed into the checkout.)
if [[ $(id -u) -eq 0 ]]; then
    as_pg() { (cd "$WORK" && runuser -u postgres -- "$@"); }
else
    as_pg() { (cd "$WORK" && "$@"); }
fi

if [[ $(id -u) -eq 0 ]]; then
    WORK=$(mktemp -d /tmp/flextrain-pg.XXXXXX)  # not $TMPDIR: it may be root's own
    chown postgres: "$WORK"
else
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/flextrain-pg.XXXXXX")
fi
DATA="$WORK/data"
cleanup() {
    if [[ -f "$DATA/postmaster.pid" ]]; then
        as_pg "$BIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=${FLEXTRAIN_PG_PORT:-$("$PY" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')}

as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$WORK/initdb.log" \
    || { cat "$WORK/initdb.log" >&2; exit 1; }
# A test cluster: durability does not matter, speed does.
# autovacuum off: each test's database is dropped WITH (FORCE), which cannot end an
# autovacuum worker (a superuser's process) still in it, and the drop then fails.
as_pg "$BIN/pg_ctl" -D "$DATA" -l "$WORK/server.log" -w -t 60 start \
    -o "-h 127.0.0.1 -p $PORT -k $WORK -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c autovacuum=off" \
    >/dev/null || { cat "$WORK/server.log" >&2; exit 1; }

psql_admin() { "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres "$@"; }
# The tests connect as an ordinary role that may create databases (one per test), not as superuser.
psql_admin -d postgres -c "CREATE ROLE flextrain LOGIN CREATEDB"
psql_admin -d postgres -c "CREATE DATABASE flextrain_test OWNER flextrain"

dirs=()
for dir in "${TEST_DIRS[@]}"; do
    [[ -e "$dir" ]] && dirs+=("$dir")
done
if [[ ${#dirs[@]} -eq 0 ]]; then
    echo "None of ${TEST_DIRS[*]} exists: nothing to test." >&2
    exit 1
fi
echo "PostgreSQL $("$BIN/postgres" -V | awk '{print $3}') on 127.0.0.1:$PORT; testing ${dirs[*]}"
status=0
FLEXTRAIN_TEST_DATABASE_URL="postgresql+psycopg://flextrain@127.0.0.1:$PORT/flextrain_test" \
    "$PY" -m pytest "${dirs[@]}" "$@" || status=$?
exit "$status"
