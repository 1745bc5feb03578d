#!/usr/bin/env bash
# Makes sure PostgreSQL server binaries (initdb and postgres) exist on this machine, so that
# `tasker serve` can start its own private cluster. It looks where tasker looks: PATH,
# `pg_config --bindir`, /usr/lib/postgresql/*/bin and TASKER_POSTGRES_BIN_DIR. On Debian/Ubuntu
# it installs them with apt-get when they are missing (as root, or through sudo). Elsewhere it
# explains what to do. With DATABASE_URL set there is nothing to do.
set -euo pipefail
if [ -n "${DATABASE_URL:-}" ]; then exit 0; fi

has_server() { [ -x "$1/initdb" ] && [ -x "$1/postgres" ]; }

found() {
  local dir
  if [ -n "${TASKER_POSTGRES_BIN_DIR:-}" ] && has_server "$TASKER_POSTGRES_BIN_DIR"; then return 0; fi
  if command -v postgres >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then return 0; fi
  if command -v pg_config >/dev/null 2>&1 && has_server "$(pg_config --bindir)"; then return 0; fi
  for dir in /usr/lib/postgresql/*/bin; do
    if has_server "$dir"; then return 0; fi
  done
  return 1
}

if found; then exit 0; fi

if command -v apt-get >/dev/null 2>&1; then
  SUDO=()
  if [ "$(id -u)" != 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "ensure-postgres: PostgreSQL is not installed; run as root: apt-get install postgresql (or set DATABASE_URL)" >&2
      exit 1
    fi
    SUDO=(sudo)
  fi
  echo "ensure-postgres: installing PostgreSQL server packages with apt-get" >&2
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  if found; then exit 0; fi
  echo "ensure-postgres: apt-get installed postgresql but no initdb/postgres was found under /usr/lib/postgresql/*/bin" >&2
  exit 1
fi

echo "ensure-postgres: no PostgreSQL server binaries (initdb, postgres) found; install PostgreSQL" \
  "(e.g. brew install postgresql, dnf install postgresql-server), set TASKER_POSTGRES_BIN_DIR to their" \
  "folder, or set DATABASE_URL to use an existing server" >&2
exit 1
