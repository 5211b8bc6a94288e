# shellcheck shell=bash
# Helpers shared by the scripts in this folder; sourced, never run.
# Every script is `set -euo pipefail`; these functions assume that.

# Repo root, whatever the caller's working directory.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export ROOT

# Progress goes to stderr so that stdout stays usable for data (psql -At ...).
say() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
die() { say "error: $*"; exit 1; }
header() { printf '\n==> %s\n' "$*" >&2; }

# url_with_db URL DBNAME: the same connection URL, pointed at another database.
# Keeps user, password, host(s), port and query parameters (host=/socket/dir,
# sslmode=...), so it works for TCP and unix-socket URLs alike.
url_with_db() {
    local url=$1 db=$2 scheme rest query=""
    case $url in
        postgres://* | postgresql://*) ;;
        *) die "DATABASE_URL must be a postgresql:// URL, got: $url" ;;
    esac
    scheme=${url%%://*}
    rest=${url#*://}
    if [[ $rest == *\?* ]]; then query="?${rest#*\?}"; rest=${rest%%\?*}; fi
    printf '%s://%s/%s%s\n' "$scheme" "${rest%%/*}" "$db" "$query"
}

# sqitch_target DBNAME: a sqitch target URI for DBNAME on the DATABASE_URL
# server. Sqitch's pg engine hands URI query parameters to psql and DBD::Pg as
# libpq keywords, so db:pg://user@/db?host=/socket/dir&port=N works too.
sqitch_target() {
    local url
    url=$(url_with_db "$DATABASE_URL" "$1")
    printf 'db:pg://%s\n' "${url#*://}"
}

# psql with no ~/.psqlrc, stopping at the first error.
psql_admin() { psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" "$@"; }

# recreate_db NAME: drop (kicking out leftover sessions) and create NAME.
recreate_db() {
    psql_admin -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS \"$1\" WITH (FORCE)" -c "CREATE DATABASE \"$1\""
}
