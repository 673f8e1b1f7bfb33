#!/usr/bin/env bash
# Runs once, when the postgres container initialises an empty volume (docker-entrypoint-initdb.d).
# Each service owns one database through its own role and cannot connect to the others': services never share data.
set -euo pipefail

: "${HANDOFF_DB_PASSWORD:?HANDOFF_DB_PASSWORD must be set for the postgres container}"

for service in ingest scoring routing; do
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
        --set=svc="$service" --set=pw="$HANDOFF_DB_PASSWORD" <<'SQL'
CREATE ROLE :"svc" LOGIN PASSWORD :'pw';
CREATE DATABASE :"svc" OWNER :"svc";
REVOKE CONNECT ON DATABASE :"svc" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"svc" TO :"svc";
SQL
done
