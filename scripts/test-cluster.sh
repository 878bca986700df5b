#!/usr/bin/env bash
# The cluster executors against real engines: a throwaway two-node Slurm cluster
# (Debian's slurmctld, slurmd, munge; installed here if missing) and a local Ray head
# (flextrain[ray]), both started and stopped by the tests' fixtures. First on the
# default SQLite store, then the tests whose nodes share a store on PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}

if ! command -v slurmctld >/dev/null && [[ ! -x /usr/sbin/slurmctld ]]; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "Slurm is not installed. Fix: sudo apt-get install -y slurmctld slurmd slurm-client munge" >&2
        exit 1
    fi
    echo "Installing Slurm and munge from Debian packages..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi
if ! "$PY" -c "import ray.job_submission" 2>/dev/null; then
    echo "Installing flextrain[ray]..."
    "$PY" -m pip install --quiet -e ".[ray]"
fi

status=0
"$PY" -m pytest -m cluster tests/cluster "$@" || status=$?
FLEXTRAIN_PG_TESTS=tests/cluster PY=$PY bash scripts/test-postgres.sh -m cluster -k two_node "$@" \
    || status=$?
exit "$status"
