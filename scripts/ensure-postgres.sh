#!/usr/bin/env bash
# Makes sure PostgreSQL server binaries exist on this machine, so that `tasker serve` can start
# its own private cluster. On Debian/Ubuntu it installs them with apt-get when they are missing
# (as root, or through sudo). Elsewhere it explains what to do.
set -euo pipefail
if [ -n "${DATABASE_URL:-}" ]; then exit 0; fi
if command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 \
   || { command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/pg_ctl" ]; }; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  echo "ensure-postgres: installing PostgreSQL server packages with apt-get" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
  exit 0
fi
echo "ensure-postgres: no PostgreSQL server binaries found; install PostgreSQL (13 or newer) or set DATABASE_URL" >&2
exit 1
