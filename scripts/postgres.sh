#!/usr/bin/env bash
# A local PostgreSQL server from Debian's packages, for development, integration tests and fault drills.
#
#   scripts/postgres.sh ensure    install the server if missing, create/start a cluster on 127.0.0.1:$PGPORT,
#                                 make sure role handoff (password handoff, CREATEDB) and database handoff exist
#   scripts/postgres.sh start     same as ensure (fast when everything is there); fault drills call it after stop
#   scripts/postgres.sh stop      fast shutdown of the cluster on $PGPORT; fine if it is not running
#   scripts/postgres.sh restart   stop then start
#   scripts/postgres.sh status    print "running ..." (exit 0) or "not running" (exit 3)
#   scripts/postgres.sh url       print the SQLAlchemy URL of the handoff database
#
# Runs as root (the server itself runs as the postgres user via pg_ctlcluster / runuser).
# Environment: PGPORT (default 5432), PG_START_TIMEOUT seconds (default 30).
set -euo pipefail

PGPORT="${PGPORT:-5432}"
PG_START_TIMEOUT="${PG_START_TIMEOUT:-30}"
APP_ROLE="handoff"
APP_PASSWORD="handoff"
APP_DB="handoff"

log() { printf 'postgres.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

url() { echo "postgresql+asyncpg://$APP_ROLE:$APP_PASSWORD@127.0.0.1:$PGPORT/$APP_DB"; }

server_installed() {
    command -v pg_ctlcluster >/dev/null && command -v pg_lsclusters >/dev/null && command -v psql >/dev/null &&
        compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

install_server() {
    [[ "$(id -u)" == 0 ]] || die "PostgreSQL is not installed and installing it needs root"
    log "installing PostgreSQL from Debian's packages"
    apt-get update -qq
    # needrestart would otherwise ask about restarting services in the middle of a scripted install.
    DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get install -y -qq postgresql >/dev/null
    server_installed || die "apt-get finished but the PostgreSQL server binaries are still missing"
}

newest_version() {
    local dir best=""
    for dir in /usr/lib/postgresql/*/bin/postgres; do
        dir="${dir%/bin/postgres}"
        dir="${dir##*/}"
        if [[ -z "$best" ]] || ((dir > best)); then best="$dir"; fi
    done
    echo "$best"
}

# Prints "version name status" of the cluster configured for $PGPORT, nothing if there is none.
find_cluster() {
    pg_lsclusters --no-header 2>/dev/null | awk -v port="$PGPORT" '$3 == port { print $1, $2, $4; exit }'
}

run_as_postgres() {
    if [[ "$(id -u)" == 0 ]]; then
        # From / so psql does not warn that the postgres user cannot enter root's working directory.
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

psql_admin() {
    # The Unix socket with peer auth as the postgres superuser: works before any password exists. SQL on stdin.
    run_as_postgres psql -X -q -v ON_ERROR_STOP=1 -p "$PGPORT" -d postgres
}

wait_ready() {
    local deadline=$((SECONDS + PG_START_TIMEOUT))
    until pg_isready -q -h 127.0.0.1 -p "$PGPORT"; do
        ((SECONDS < deadline)) || die "PostgreSQL did not accept connections on 127.0.0.1:$PGPORT within ${PG_START_TIMEOUT}s"
        sleep 0.2
    done
}

start_cluster() {
    local cluster version name status
    cluster="$(find_cluster)"
    if [[ -z "$cluster" ]]; then
        version="$(newest_version)"
        # "main" may already exist on another port (a second PGPORT for parallel test runs): do not touch it.
        name="main"
        [[ -d "/etc/postgresql/$version/main" ]] && name="port$PGPORT"
        log "creating cluster $version/$name on port $PGPORT"
        # C.UTF-8 ships with every glibc, so a fresh machine without locales configured still works.
        pg_createcluster "$version" "$name" -p "$PGPORT" --locale C.UTF-8 -e UTF8 >/dev/null
        cluster="$(find_cluster)"
        [[ -n "$cluster" ]] || die "pg_createcluster did not produce a cluster on port $PGPORT"
    fi
    read -r version name status <<<"$cluster"
    if [[ "$status" != online* ]]; then
        # The socket directory lives on a tmpfs on some machines and vanishes on reboot.
        install -d -o postgres -g postgres -m 2775 /var/run/postgresql 2>/dev/null || true
        log "starting cluster $version/$name on port $PGPORT"
        pg_ctlcluster "$version" "$name" start
    fi
    wait_ready
}

ensure_role_and_database() {
    # Re-asserting the password and CREATEDB each time repairs a role someone altered by hand.
    psql_admin <<SQL
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$APP_ROLE') THEN
        CREATE ROLE $APP_ROLE LOGIN CREATEDB PASSWORD '$APP_PASSWORD';
    ELSE
        ALTER ROLE $APP_ROLE LOGIN CREATEDB PASSWORD '$APP_PASSWORD';
    END IF;
END
\$\$;
-- Tests drop their databases WITH (FORCE), which must be able to end other roles' sessions in them.
GRANT pg_signal_backend TO $APP_ROLE;
SELECT 'CREATE DATABASE $APP_DB OWNER $APP_ROLE'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$APP_DB')\gexec
SQL
    # Prove the path the services take: TCP on 127.0.0.1 with a password.
    PGPASSWORD="$APP_PASSWORD" psql -X -q -h 127.0.0.1 -p "$PGPORT" -U "$APP_ROLE" -d "$APP_DB" \
        -tAc 'SELECT 1' >/dev/null || die "role $APP_ROLE cannot log in to $APP_DB over 127.0.0.1:$PGPORT"
}

cmd_ensure() {
    server_installed || install_server
    start_cluster
    ensure_role_and_database
    log "ready: $(url)"
}

cmd_stop() {
    local cluster version name status
    if ! server_installed; then
        echo "postgres not installed"
        return 0
    fi
    cluster="$(find_cluster)"
    if [[ -z "$cluster" ]]; then
        echo "no cluster on port $PGPORT"
        return 0
    fi
    read -r version name status <<<"$cluster"
    if [[ "$status" != online* ]]; then
        echo "postgres $version/$name not running"
        return 0
    fi
    # Fast mode: roll back open transactions and disconnect clients now, as a crash drill wants.
    pg_ctlcluster "$version" "$name" stop -m fast
    echo "postgres $version/$name stopped"
}

cmd_status() {
    local cluster version name status
    if server_installed; then
        cluster="$(find_cluster)"
        if [[ -n "$cluster" ]]; then
            read -r version name status <<<"$cluster"
            if [[ "$status" == online* ]] && pg_isready -q -h 127.0.0.1 -p "$PGPORT"; then
                echo "running ($version/$name, 127.0.0.1:$PGPORT)"
                return 0
            fi
        fi
    fi
    echo "not running"
    return 3
}

case "${1:-}" in
    ensure | start) cmd_ensure ;;
    stop) cmd_stop ;;
    restart) cmd_stop && cmd_ensure ;;
    status) cmd_status ;;
    url) url ;;
    *)
        echo "usage: $0 {ensure|start|stop|restart|status|url}" >&2
        exit 2
        ;;
esac
