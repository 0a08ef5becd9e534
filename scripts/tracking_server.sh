#!/usr/bin/env bash
# A team's MLflow tracking server: PostgreSQL (Debian's package) holding runs and users, and
# `mlflow server` on it with basic-auth and served artifacts.
#
#   bash scripts/tracking_server.sh start         start both (again: prints how to connect)
#   bash scripts/tracking_server.sh stop [mlflow] stop both, or the MLflow server only
#   bash scripts/tracking_server.sh status        exit 0 when both answer, 3 otherwise
#
# Settings (environment):
#   STAGEWISE_SERVER_DIR   state, outside the clone (default /tmp/stagewise-server-<uid>):
#                          pg/ (database), artifacts/, logs, and the 0600 files
#                          credentials.env, basic_auth.ini, secret_key, pgpass. The script
#                          uses only a folder it made (an empty one of yours, or one marked
#                          .stagewise-server) that is yours and that no one else can write.
#   STAGEWISE_SERVER_HOST  interface the MLflow server binds to (default 127.0.0.1)
#   STAGEWISE_SERVER_PORT  its port (default: a free one, kept for later starts)
#   STAGEWISE_PG_PORT      PostgreSQL's port on 127.0.0.1 (default: a free one, kept)
#   STAGEWISE_PG_BIN       PostgreSQL's programs (default: Debian's newest /usr/lib/postgresql/*/bin)
#   STAGEWISE_ARTIFACTS    where the server stores artifacts (default <dir>/artifacts;
#                          s3://bucket/prefix with the usual AWS_* variables for S3)
#   STAGEWISE_SERVER_WORKERS  MLflow server processes (default 2)
#   STAGEWISE_SERVER_TIMEOUT  seconds to wait for the server to answer (default 90)
#   STAGEWISE_AUTH_CACHE_SECONDS  how long a server process trusts a checked password
#                          (default 60; 0: hash it again on every request)
#   MLFLOW_SERVER_ENABLE_JOB_EXECUTION  MLflow's GenAI job runner (default false here)
#   MLFLOW_AUTH_ADMIN_USERNAME / MLFLOW_AUTH_ADMIN_PASSWORD  the admin created on the first
#                          start (default admin / a generated password in credentials.env)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The default is per user: PostgreSQL runs as its own user when we are root and must reach
# pg/, which a folder under root's 0700 home would not allow.
dir=${STAGEWISE_SERVER_DIR:-/tmp/stagewise-server-$(id -u)}
host=${STAGEWISE_SERVER_HOST:-127.0.0.1}
timeout=${STAGEWISE_SERVER_TIMEOUT:-90}
me=tracking_server.sh
MARK=.stagewise-server # in every state folder this script made

die() { echo "$me: $*" >&2; exit 1; }

# A state folder holds the admin password and the database: one planted by someone else (in
# the shared temp folder, say) would hand them our server, with their password.
trusted_dir() {
    local owner mode
    [ -d "$dir" ] || { [ ! -e "$dir" ] && [ ! -L "$dir" ] && mkdir -m 0700 "$dir"; } ||
        die "cannot create the state folder $dir (STAGEWISE_SERVER_DIR)"
    [ ! -L "$dir" ] || die "$dir (STAGEWISE_SERVER_DIR) is a symbolic link; give the folder itself"
    read -r owner mode < <(stat -c '%u %a' "$dir")
    [ "$owner" = "$(id -u)" ] ||
        die "$dir (STAGEWISE_SERVER_DIR) belongs to user $owner, not you: someone else made it; remove it or choose another folder"
    (((8#$mode & 8#022) == 0)) ||
        die "$dir (STAGEWISE_SERVER_DIR) can be written by others (mode $mode); remove it or choose another folder"
    if [ ! -e "$dir/$MARK" ]; then
        [ -z "$(ls -A "$dir")" ] ||
            die "$dir (STAGEWISE_SERVER_DIR) is not empty and has no $MARK: this script did not make it; choose an empty or new folder (or touch $dir/$MARK if an earlier version of this script made it)"
        : >"$dir/$MARK"
    fi
    local file
    for file in credentials.env basic_auth.ini secret_key pg_password pgpass port pg_port mlflow.pid; do
        [ -e "$dir/$file" ] || [ -L "$dir/$file" ] || continue
        read -r owner mode < <(stat -c '%u %a' "$dir/$file")
        [ "$owner" = "$(id -u)" ] && [ ! -L "$dir/$file" ] ||
            die "$dir/$file is not yours (user $owner) or is a link: someone else put it there; remove $dir and start again"
        (((8#$mode & 8#077) == 0)) ||
            die "$dir/$file can be read or written by others (mode $mode): chmod 600 it if you made it, then start again"
    done
}

umask 077 # everything this script writes is ours alone, unless it says otherwise
trusted_dir
dir=$(cd "$dir" && pwd)
# PostgreSQL runs as the postgres user when we are root: it must reach pg/ through this folder,
# but not list it or read the secrets beside it (0600, ours).
chmod 0711 "$dir"
exec 9>"$dir/.lock"
flock 9 # parallel starts (pytest workers) wait for the first; daemons get 9>&-, not the lock

pg_bin() {
    local bin=${STAGEWISE_PG_BIN:-}
    [ -n "$bin" ] && { [ -x "$bin/initdb" ] || die "STAGEWISE_PG_BIN=$bin has no initdb"; } && echo "$bin" && return
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
    if [ -z "$bin" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "$me: installing PostgreSQL (apt-get install postgresql)..." >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null ||
            die "could not install PostgreSQL with apt-get; install the postgresql package"
        bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
    fi
    [ -n "$bin" ] || die "PostgreSQL is not installed: apt-get install postgresql (as root)"
    echo "$bin"
}

as_pg() { # PostgreSQL's tools refuse to run as root
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
    python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

kept() { # kept NAME DEFAULT: a setting chosen once and reused by later starts
    [ -s "$dir/$1" ] || echo "$2" >"$dir/$1"
    cat "$dir/$1"
}

secret() { # secret FILE: a random token, created once, readable by us alone
    [ -s "$1" ] || (umask 077 && python -c 'import secrets; print(secrets.token_urlsafe(24))' >"$1")
    cat "$1"
}

PATH="$(bash "$repo/scripts/env.sh")/bin:$PATH"
export PATH

pg_running() { [ -f "$dir/pg/postmaster.pid" ] && as_pg "$(pg_bin)/pg_ctl" status -D "$dir/pg" >/dev/null 2>&1; }
mlflow_pid() { [ -s "$dir/mlflow.pid" ] && kill -0 "$(cat "$dir/mlflow.pid")" 2>/dev/null && cat "$dir/mlflow.pid"; }
url() { echo "http://$host:$(cat "$dir/port")"; }
answers() { python -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/health", timeout=2)' "$(url)" 2>/dev/null; }

start_postgres() {
    local bin pg_port
    bin=$(pg_bin)
    pg_port=$(kept pg_port "${STAGEWISE_PG_PORT:-$(free_port)}")
    secret "$dir/pg_password" >/dev/null
    # libpq reads the database password from this file: it never appears on a command line.
    (umask 077 && echo "127.0.0.1:$pg_port:*:mlflow:$(cat "$dir/pg_password")" >"$dir/pgpass")
    if [ ! -f "$dir/pg/PG_VERSION" ]; then
        mkdir -p "$dir/pg"
        [ "$(id -u)" = 0 ] && chown postgres: "$dir/pg"
        install -m 0644 /dev/null "$dir/pg.log"
        [ "$(id -u)" = 0 ] && chown postgres: "$dir/pg.log"
        as_pg "$bin/initdb" -D "$dir/pg" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
            >"$dir/initdb.log" 2>&1 || die "initdb failed; see $dir/initdb.log"
    fi
    if ! pg_running; then
        as_pg "$bin/pg_ctl" start -w -t 30 -D "$dir/pg" -l "$dir/pg.log" \
            -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $dir/pg" >/dev/null 9>&- ||
            die "PostgreSQL did not start; see $dir/pg.log"
    fi
    local psql=("$bin/psql" -h "$dir/pg" -p "$pg_port" -U postgres -qtAX)
    if [ -z "$(as_pg "${psql[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname = 'mlflow'")" ]; then
        # On stdin, not -c: a command line is readable by every user in the process list.
        as_pg "${psql[@]}" -v ON_ERROR_STOP=1 >/dev/null <<SQL || die "could not create the mlflow role and databases; see $dir/pg.log"
CREATE ROLE mlflow LOGIN PASSWORD '$(cat "$dir/pg_password")';
CREATE DATABASE mlflow OWNER mlflow;
CREATE DATABASE mlflow_auth OWNER mlflow;
SQL
    fi
}

write_auth_config() {
    local pg_port admin password
    pg_port=$(cat "$dir/pg_port")
    admin=${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
    if [ ! -s "$dir/credentials.env" ]; then
        password=${MLFLOW_AUTH_ADMIN_PASSWORD:-$(python -c 'import secrets; print(secrets.token_urlsafe(18))')}
        (umask 077 && printf 'MLFLOW_TRACKING_USERNAME=%s\nMLFLOW_TRACKING_PASSWORD=%s\n' \
            "$admin" "$password" >"$dir/credentials.env")
    fi
    password=$(sed -n 's/^MLFLOW_TRACKING_PASSWORD=//p' "$dir/credentials.env")
    # MLflow's basic_auth.ini, with its users in the same PostgreSQL; read by the server only.
    # Each request carries the password, and checking it against its scrypt hash costs
    # ~0.15 s of CPU: without the cache, a training's ~85 requests cost the server seconds.
    # A password changed or a user deleted stays usable on the other server processes for up
    # to the cache's time.
    (umask 077 && cat >"$dir/basic_auth.ini" <<EOF
[mlflow]
default_permission = READ
database_uri = postgresql+psycopg2://mlflow@127.0.0.1:$pg_port/mlflow_auth
admin_username = $admin
admin_password = $password
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = ${STAGEWISE_AUTH_CACHE_SECONDS:-60}
EOF
    )
}

start_mlflow() {
    local port artifacts
    port=$(kept port "${STAGEWISE_SERVER_PORT:-$(free_port)}")
    artifacts=${STAGEWISE_ARTIFACTS:-$dir/artifacts}
    [[ $artifacts == *://* ]] || mkdir -p "$artifacts"
    write_auth_config
    if [ -z "$(mlflow_pid)" ]; then
        python -c 'import flask_wtf' 2>/dev/null ||
            die "MLflow's basic-auth app needs Flask-WTF (mlflow[auth]), which the environment lacks"
        # setsid: the server and its workers form one process group, stopped together.
        # MLflow's job runner (GenAI jobs: judges, prompt optimization, trace rollups; nothing
        # stagewise uses) is 8 more processes; MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true keeps it.
        env -u MLFLOW_TRACKING_URI -u MLFLOW_TRACKING_USERNAME -u MLFLOW_TRACKING_PASSWORD \
            -u MLFLOW_AUTH_ADMIN_USERNAME -u MLFLOW_AUTH_ADMIN_PASSWORD \
            PGPASSFILE="$dir/pgpass" MLFLOW_AUTH_CONFIG_PATH="$dir/basic_auth.ini" \
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}" \
            MLFLOW_FLASK_SERVER_SECRET_KEY="$(secret "$dir/secret_key")" \
            setsid mlflow server --app-name basic-auth \
            --backend-store-uri "postgresql+psycopg2://mlflow@127.0.0.1:$(cat "$dir/pg_port")/mlflow" \
            --serve-artifacts --artifacts-destination "$artifacts" \
            --host "$host" --port "$port" --workers "${STAGEWISE_SERVER_WORKERS:-2}" \
            >>"$dir/mlflow.log" 2>&1 </dev/null 9>&- &
        echo $! >"$dir/mlflow.pid"
    fi
    local waited=0
    until answers; do
        [ -n "$(mlflow_pid)" ] || die "the MLflow server exited; see $dir/mlflow.log"
        [ "$waited" -lt "$((timeout * 2))" ] ||
            die "the MLflow server did not answer on $(url) within $timeout s; see $dir/mlflow.log"
        sleep 0.5
        waited=$((waited + 1))
    done
}

stop_mlflow() {
    local pid
    if pid=$(mlflow_pid); then
        kill -TERM -- "-$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$dir/mlflow.pid"
}

print_connection() {
    cat <<EOF
MLflow tracking server: $(url) (state in $dir)
  export MLFLOW_TRACKING_URI=$(url)
  set -a; . $dir/credentials.env; set +a   # MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD
EOF
}

case "${1:-}" in
start)
    start_postgres
    start_mlflow
    print_connection
    ;;
stop)
    stop_mlflow
    if [ "${2:-}" != mlflow ] && pg_running; then
        as_pg "$(pg_bin)/pg_ctl" stop -m fast -D "$dir/pg" >/dev/null
    fi
    ;;
status)
    pg=down server=down
    pg_running && pg=up
    [ -n "$(mlflow_pid)" ] && answers && server=up
    echo "PostgreSQL: $pg; MLflow server: $server${dir:+ ($dir)}"
    [ "$pg" = up ] && [ "$server" = up ] && print_connection && exit 0
    exit 3
    ;;
*)
    echo "usage: $me start | stop [mlflow] | status" >&2
    exit 2
    ;;
esac
