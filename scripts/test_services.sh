#!/usr/bin/env bash
# What `make test` needs beyond .venv: PostgreSQL and Redis running on loopback (started here when they are
# installed but down) and Debian's Chromium for the dashboard's browser tests (installed here when missing).
# Safe to run again: each step does nothing when its part is already there.
set -euo pipefail

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; }

if ! pg_up && [ -d /etc/postgresql ]; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
fi
if ! redis_up && command -v redis-server >/dev/null; then
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
for _ in $(seq 1 30); do
  pg_up && redis_up && break
  sleep 1
done
pg_up || { echo "PostgreSQL is not reachable on 127.0.0.1:5432 (trust auth, database test)" >&2; exit 1; }
redis_up || { echo "Redis is not reachable on 127.0.0.1:6379" >&2; exit 1; }

# Playwright drives Debian's Chromium; it never downloads a browser of its own.
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "the dashboard tests need Debian's chromium: run 'sudo apt-get install chromium'" >&2
    exit 1
  fi
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
fi
