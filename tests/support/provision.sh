#!/usr/bin/env bash
# Makes sure the real services the test suite uses are here, and prints the environment the
# tests should use (KEY=VALUE lines). PostgreSQL and Redis at their standard local ports are used
# when they answer; otherwise (as root) their Debian packages are installed and private
# instances are started for the run. BIND, slapd and Chromium are installed when missing; the
# tests start their own private instances of those.
set -uo pipefail

log() { echo "provision: $*" >&2; }
is_root() { [ "$(id -u)" = 0 ]; }
apt_updated=""
apt_install() {
  is_root && command -v apt-get >/dev/null || { log "cannot install $* (not root or no apt)"; return 1; }
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "$apt_updated" ]; then apt-get update -q >/dev/null 2>&1; apt_updated=1; fi
  apt-get install -y -q "$@" >/dev/null 2>&1 ||
    { log "apt-get install $* failed"; return 1; }
}
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
run_dir="${HISP_TEST_RUN_DIR:-/tmp/hisp-test-services}"
mkdir -p "$run_dir"

# --- PostgreSQL ---------------------------------------------------------------------------
pg_url="${HISP_TEST_DATABASE_URL:-}"
if [ -z "$pg_url" ]; then
  pg_port="${HISP_TEST_PG_PORT:-5432}"
  if answers "$pg_port"; then
    pg_url="postgres://postgres@127.0.0.1:$pg_port/hisp"
  else
    log "PostgreSQL does not answer on $pg_port; starting a private instance"
    if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then apt_install postgresql; fi
    bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
    if [ -n "$bindir" ]; then
      pgdata="$run_dir/pg"
      owner=postgres; id postgres >/dev/null 2>&1 || owner="$(id -un)"
      as_owner() { if is_root && [ "$owner" != root ]; then runuser -u "$owner" -- "$@"; else "$@"; fi; }
      if [ ! -f "$pgdata/PG_VERSION" ]; then
        mkdir -p "$pgdata"; chown "$owner" "$pgdata" "$run_dir"
        as_owner "$bindir/initdb" -D "$pgdata" -A trust -U postgres >/dev/null
      fi
      as_owner "$bindir/pg_ctl" -D "$pgdata" -o "-p $pg_port -k $run_dir -c listen_addresses=127.0.0.1" \
        -l "$run_dir/pg.log" -w start >/dev/null || log "private PostgreSQL failed to start"
      pg_url="postgres://postgres@127.0.0.1:$pg_port/hisp"
    fi
  fi
fi
[ -n "$pg_url" ] && echo "DATABASE_URL=$pg_url"

# --- Redis --------------------------------------------------------------------------------
if ! answers 6379; then
  log "Redis does not answer on 6379; starting a private instance"
  command -v redis-server >/dev/null || apt_install redis-server
  if command -v redis-server >/dev/null; then
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
      --dir "$run_dir" --logfile "$run_dir/redis.log" >/dev/null
    for _ in $(seq 50); do answers 6379 && break; sleep 0.1; done
  fi
fi
echo "HISP_TEST_REDIS_URL=redis://127.0.0.1:6379/15"

# --- BIND, slapd, Chromium, OpenSSL (the tests start their own instances) ------------------
need=()
[ -x /usr/sbin/named ] || need+=(bind9 bind9-utils)
command -v dig >/dev/null || need+=(bind9-dnsutils)
[ -x /usr/sbin/slapd ] || need+=(slapd)
command -v ldapadd >/dev/null || need+=(ldap-utils)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt_install "${need[@]}" || true
fi
# Debian's package scripts may have started system daemons; the tests use private instances.
exit 0
