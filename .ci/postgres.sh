#!/usr/bin/env bash
# A throwaway PostgreSQL server for the label-store tests (Debian package `postgresql`).
#   .ci/postgres.sh start DIR   -> prints the server's URL (postgresql://annotune@127.0.0.1:PORT/annotune_test)
#   .ci/postgres.sh stop DIR
set -euo pipefail
action=$1 dir=$2
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as=()
if [ "$(id -u)" = 0 ]; then as=(runuser -u postgres --); fi  # initdb refuses to run as root
if [ "$action" = stop ]; then
  "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true
  exit 0
fi
port=${ANNOTUNE_TEST_PGPORT:-$(python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")}
mkdir -p "$dir"
if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
"${as[@]}" "$bin/initdb" -D "$dir/data" -A trust -U annotune >/dev/null
"${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1" start >/dev/null
"${as[@]}" "$bin/createdb" -h 127.0.0.1 -p "$port" -U annotune annotune_test
echo "postgresql://annotune@127.0.0.1:$port/annotune_test"
