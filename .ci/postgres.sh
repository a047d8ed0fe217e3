#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on loopback for the several-machines test.
# Prints the URL on success; prints nothing (and the test skips) when no server can be had.
set -u
# A free loopback port, so a server left by someone else cannot collide with ours.
PGPORT=${PGPORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) >&2 || true
  fi
fi
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$bin" ] || { echo "ci: no PostgreSQL available; its test will be skipped" >&2; exit 0; }
data=$(mktemp -d /tmp/satadvisor-pg.XXXXXX)
run_as=()
if [ "$(id -u)" = "0" ]; then
  id postgres >/dev/null 2>&1 || useradd -r postgres >&2
  chown postgres "$data"
  run_as=(runuser -u postgres --)
fi
"${run_as[@]}" "$bin/initdb" -D "$data" -A trust -U postgres >/dev/null 2>&1 \
  || { echo "ci: initdb failed; the PostgreSQL test will be skipped" >&2; exit 0; }
"${run_as[@]}" "$bin/pg_ctl" -D "$data" -l "$data/log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $data" start >/dev/null 2>&1 \
  || { echo "ci: PostgreSQL did not start; its test will be skipped" >&2; exit 0; }
"${run_as[@]}" "$bin/createdb" -h 127.0.0.1 -p "$PGPORT" -U postgres satadvisor >&2
echo "$data" > /tmp/satadvisor-pg.datadir
echo "postgresql://postgres@127.0.0.1:$PGPORT/satadvisor"
