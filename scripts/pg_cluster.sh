#!/usr/bin/env bash
# A throw-away PostgreSQL cluster for the tests: `pg_cluster.sh start DIR` creates one in DIR
# (initdb, trust authentication, UTF-8) and starts it listening on a Unix socket in DIR only
# (no TCP port, so runs cannot collide), then prints its conninfo; `pg_cluster.sh stop DIR`
# stops it and deletes DIR; `pause DIR` stops the server and keeps its data, `resume DIR` starts it
# again (the outage the fault tests make). As root it runs the server as the 'postgres' user
# (PostgreSQL refuses root).
set -euo pipefail
cmd=${1:?usage: pg_cluster.sh start|stop|pause|resume DIR}
dir=${2:?usage: pg_cluster.sh start|stop|pause|resume DIR}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$bin" ] && [ -x "$bin/initdb" ] || { echo "pg_cluster: PostgreSQL server binaries not found (make setup installs 'postgresql')" >&2; exit 1; }
as=()
if [ "$(id -u)" -eq 0 ]; then as=(runuser -u postgres --); fi
case "$cmd" in
start)
  mkdir -p "$dir"
  [ ${#as[@]} -gt 0 ] && chown postgres: "$dir"
  chmod 700 "$dir"
  "${as[@]}" "$bin/initdb" -D "$dir/data" -A trust -E UTF8 --locale=C -U postgres --no-sync >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
  "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses='' -c unix_socket_directories='$dir' -c fsync=off -c max_connections=50" start >/dev/null \
    || { cat "$dir/server.log" >&2; exit 1; }
  echo "host=$dir port=5432 user=postgres dbname=postgres"
  ;;
pause)
  "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null
  ;;
resume)
  "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses='' -c unix_socket_directories='$dir' -c fsync=off -c max_connections=50" start >/dev/null \
    || { cat "$dir/server.log" >&2; exit 1; }
  ;;
stop)
  [ -d "$dir/data" ] && "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$dir"
  ;;
*) echo "usage: pg_cluster.sh start|stop|pause|resume DIR" >&2; exit 2 ;;
esac
