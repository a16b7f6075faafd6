#!/usr/bin/env bash
# Install (if missing) and start a local PostgreSQL server, create the role and database
# `xnorbench`, and print the SQLAlchemy URL on stdout. Used by .ci/run for the db tests.
set -euo pipefail
if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
fi
ver=$(ls /etc/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h | awk -v v="$ver" '$1==v && $2=="main"' | grep -q .; then
  pg_createcluster "$ver" main >&2
fi
pg_ctlcluster "$ver" main start >&2 || true
for _ in $(seq 1 30); do
  pg_isready -q -h localhost -p 5432 && break
  sleep 1
done
su postgres -c "psql -q -tc \"SELECT 1 FROM pg_roles WHERE rolname='xnorbench'\"" | grep -q 1 ||
  su postgres -c "psql -q -c \"CREATE ROLE xnorbench LOGIN PASSWORD 'xnorbench'\"" >&2
su postgres -c "psql -q -tc \"SELECT 1 FROM pg_database WHERE datname='xnorbench'\"" | grep -q 1 ||
  su postgres -c "createdb -O xnorbench xnorbench" >&2
echo "postgresql+psycopg://xnorbench:xnorbench@localhost:5432/xnorbench"
