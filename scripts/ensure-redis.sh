#!/usr/bin/env bash
# Make sure a Redis answers on OPENPIK_REDIS_HOST:OPENPIK_REDIS_PORT (default 127.0.0.1:6379):
# start redis-server when it is installed but not running; otherwise say how to install it.
set -euo pipefail
host=${REDIS_HOST:-127.0.0.1}
port=${REDIS_PORT:-6379}

redis_answers() {
    exec 3<>"/dev/tcp/$host/$port" 2>/dev/null || return 1
    printf 'PING\r\n' >&3
    local reply=""
    read -r -t 2 reply <&3 || true
    exec 3>&-
    [[ $reply == +PONG* ]]
}

if redis_answers; then
    exit 0
fi
if ! command -v redis-server >/dev/null 2>&1; then
    echo "No Redis answers on $host:$port and redis-server is not installed." >&2
    echo "Install it (Debian/Ubuntu: sudo apt-get install redis-server) or point OPENPIK_REDIS_URL at a Redis." >&2
    exit 1
fi
echo "Starting redis-server on $host:$port"
mkdir -p var/redis
redis-server --daemonize yes --bind "$host" --port "$port" --dir "$PWD/var/redis" \
    --save "" --appendonly no --logfile "$PWD/var/redis/redis.log"
for _ in $(seq 50); do
    redis_answers && exit 0
    sleep 0.1
done
echo "redis-server did not answer on $host:$port; see var/redis/redis.log" >&2
exit 1
