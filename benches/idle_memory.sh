#!/usr/bin/env bash
# Memory per idle proxied connection, HAProxy and maas-vip side by side in one run (mode tcp).
#
# For each proxy: an echo server on loopback behind it; warm up with 200 connections; read the
# proxy's VmRSS; open N connections through it, each made live by one echoed byte (so both the
# client and the server side exist), and left idle; read VmRSS again. Prints bytes per
# connection = RSS growth / N. Kernel socket buffers are not in RSS, for either proxy.
#
#   benches/idle_memory.sh              # N=5000
#   N=10000 benches/idle_memory.sh
#   MAAS_VIP_BIN=target/debug/maas-vip benches/idle_memory.sh
#
# Needs: haproxy, python3, prlimit (util-linux). Everything listens on 127.0.0.1 only; all
# processes are stopped on exit. The test `memory_per_idle_proxied_connection_is_bounded` in
# tests/tests/limits.rs measures maas-vip alone the same way and asserts a bound.
set -euo pipefail

N=${N:-5000}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/maas-vip-idle.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Each proxy holds 2 descriptors per connection; the load generator holds 2 per connection too
# (client side + echo server side).
want=$((2 * N + 1024))
ulimit -n "$want" 2>/dev/null || { echo "idle_memory.sh: cannot raise ulimit -n to $want" >&2; exit 2; }

for tool in haproxy python3 prlimit; do
  command -v "$tool" >/dev/null || { echo "idle_memory.sh: $tool is not installed" >&2; exit 2; }
done

bin=${MAAS_VIP_BIN:-}
if [ -z "$bin" ]; then
  echo "building maas-vip (release)..." >&2
  (cd "$here" && nice -n 10 cargo build --release -q -p maas-vip)
  bin="$here/target/release/maas-vip"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
echo_port=$(free_port)
hap_port=$(free_port)
mv_port=$(free_port)

# --- the load generator: an echo server and the idle clients, in one asyncio process ----------
cat > "$work/load.py" <<'PY'
import asyncio, sys

echo_port = int(sys.argv[1])

async def echo(reader, writer):
    try:
        while True:
            data = await reader.read(64)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    writer.close()

async def open_idle(port, n, held):
    gate = asyncio.Semaphore(100)
    async def one():
        async with gate:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"x")
            await w.drain()
            got = await asyncio.wait_for(r.readexactly(1), 20)
            assert got == b"x"
            return w
    ws = await asyncio.gather(*(one() for _ in range(n)))
    held.extend(ws)

async def main():
    server = await asyncio.start_server(echo, "127.0.0.1", echo_port, backlog=4096)
    print("ready", flush=True)
    held = {}
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    # Commands on stdin: "open PORT N" -> opens N idle connections, "close PORT" -> closes them.
    while True:
        line = (await reader.readline()).decode().split()
        if not line:
            break
        if line[0] == "open":
            port, n = int(line[1]), int(line[2])
            held.setdefault(port, [])
            await open_idle(port, n, held[port])
            print("opened", len(held[port]), flush=True)
        elif line[0] == "close":
            for w in held.pop(int(line[1]), []):
                w.close()
            print("closed", flush=True)
    server.close()

asyncio.run(main())
PY

coproc LOAD { exec python3 "$work/load.py" "$echo_port"; }
pids+=($LOAD_PID)
read -r ready <&"${LOAD[0]}"
[ "$ready" = ready ] || { echo "load generator failed" >&2; exit 1; }

load() { echo "$*" >&"${LOAD[1]}"; read -r reply <&"${LOAD[0]}"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
wait_port() { for _ in $(seq 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1',$1),1)" 2>/dev/null && return 0; sleep 0.1; done; return 1; }

measure() { # name var pid port
  local name=$1 var=$2 pid=$3 port=$4 before after per
  load open "$port" 200; load close "$port"; sleep 0.5
  before=$(rss_kib "$pid")
  load open "$port" "$N"; sleep 1
  after=$(rss_kib "$pid")
  load close "$port"; sleep 0.5
  per=$(( (after - before) * 1024 / N ))
  printf '%-9s RSS %7d KiB -> %7d KiB with %d idle connections: %6d bytes per connection\n' \
    "$name" "$before" "$after" "$N" "$per"
  printf -v "$var" '%s' "$per"
}

# --- HAProxy, mode tcp, the MAAS guide's timeouts (long ones, so nothing idles out) ------------
cat > "$work/haproxy.cfg" <<EOF
global
  maxconn $((N + 100))
defaults
  mode tcp
  timeout connect 5s
  timeout client 10m
  timeout server 10m
frontend maas
  bind 127.0.0.1:$hap_port
  default_backend regions
backend regions
  server r1 127.0.0.1:$echo_port
EOF
haproxy -f "$work/haproxy.cfg" -db 2>"$work/haproxy.log" &
hap_pid=$!
pids+=($hap_pid)

# --- maas-vip, mode tcp --------------------------------------------------------------------------
cat > "$work/maas-vip.toml" <<EOF
[[frontend]]
name = "maas"
bind = ["127.0.0.1:$mv_port"]
mode = "tcp"
maxconn = $((N + 100))
timeout_client = "10m"
timeout_server = "10m"
timeout_tunnel = "10m"
[[frontend.server]]
name = "r1"
address = "127.0.0.1:$echo_port"
check = false
[admin]
enabled = false
EOF
RUST_LOG=warn "$bin" run -c "$work/maas-vip.toml" 2>"$work/maas-vip.log" &
mv_pid=$!
pids+=($mv_pid)

wait_port "$hap_port" || { echo "haproxy did not start:"; cat "$work/haproxy.log"; exit 1; } >&2
wait_port "$mv_port" || { echo "maas-vip did not start:"; cat "$work/maas-vip.log"; exit 1; } >&2

echo "memory per idle proxied connection, mode tcp, N=$N ($(haproxy -v | head -1 | cut -d' ' -f1-3); maas-vip: $bin)"
measure haproxy per_haproxy "$hap_pid" "$hap_port"
measure maas-vip per_maas_vip "$mv_pid" "$mv_port"
python3 -c "print('ratio maas-vip / haproxy: %.2f' % ($per_maas_vip / max($per_haproxy, 1)))"
