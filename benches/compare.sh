#!/usr/bin/env bash
# Side-by-side proxy benchmark: three nginx stand-in regions on loopback, HAProxy (mode tcp, the
# MAAS guide's frontend settings) and maas-vip (mode tcp) in front of them, and wrk against each
# proxy and directly against a region. Prints requests/s and bytes/s with ratios measured in the
# same run (the machine is shared and noisy: only ratios from one run mean anything).
#
#   benches/compare.sh                 # 10 s per measurement, 2 rounds, best of rounds
#   DURATION=5 ROUNDS=1 benches/compare.sh
#   ONLY=keepalive TARGETS="haproxy maas-vip" benches/compare.sh   # a subset while iterating
#
# Needs: nginx, haproxy, wrk (apt-get install nginx-light haproxy wrk). Everything listens on
# 127.0.0.1 only; all processes are stopped on exit.
set -euo pipefail

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-2}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/maas-vip-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# HAProxy needs 2 x maxconn descriptors.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

for tool in nginx haproxy wrk; do
  command -v "$tool" >/dev/null || { echo "compare.sh: $tool is not installed" >&2; exit 2; }
done

bin=${MAAS_VIP_BIN:-}
if [ -z "$bin" ]; then
  echo "building maas-vip (release)..." >&2
  (cd "$here" && cargo build --release -q -p maas-vip)
  bin="$here/target/release/maas-vip"
fi

# --- three stand-in regions -------------------------------------------------------------------
# nginx workers run unprivileged: the files they serve must be readable to them.
chmod 755 "$work"
head -c $((1024 * 1024)) /dev/zero > "$work/1m.bin"
chmod 644 "$work/1m.bin"
for i in 1 2 3; do
  port=$((15240 + i))
  mkdir -p "$work/nginx$i"
  cat > "$work/nginx$i/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/nginx$i/nginx.pid;
error_log $work/nginx$i/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  sendfile on;
  server {
    listen 127.0.0.1:$port backlog=4096;
    location = /tiny { return 200 "ok\n"; }
    location = /1m { alias $work/1m.bin; }
  }
}
EOF
  nginx -c "$work/nginx$i/nginx.conf" -p "$work/nginx$i" &
  pids+=($!)
done

# --- HAProxy 2.6, mode tcp, the guide's frontend settings ----------------------------------------
cat > "$work/haproxy.cfg" <<EOF
global
  maxconn 8000
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 90s
  retries 3
  option redispatch
frontend maas
  bind 127.0.0.1:18080
  default_backend maas
backend maas
  balance roundrobin
  server r1 127.0.0.1:15241
  server r2 127.0.0.1:15242
  server r3 127.0.0.1:15243
EOF
haproxy -f "$work/haproxy.cfg" -q 2>"$work/haproxy.log" &
pids+=($!)

# --- maas-vip, mode tcp ------------------------------------------------------------------------
cat > "$work/maas-vip.toml" <<EOF
[[frontend]]
name = "maas"
bind = ["127.0.0.1:18081"]
mode = "tcp"
balance = "roundrobin"
maxconn = 8000
check = { kind = "tcp", interval = "2s" }
[[frontend.server]]
name = "r1"
address = "127.0.0.1:15241"
[[frontend.server]]
name = "r2"
address = "127.0.0.1:15242"
[[frontend.server]]
name = "r3"
address = "127.0.0.1:15243"
[admin]
enabled = false
EOF
# HAProxy runs without a `log` line, so maas-vip runs with its access log off too.
RUST_LOG=warn "$bin" run -c "$work/maas-vip.toml" 2>"$work/maas-vip.log" &
pids+=($!)

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "compare.sh: nothing listens on 127.0.0.1:$1" >&2
  tail -n 5 "$work"/*.log >&2 || true
  exit 1
}
for p in 15241 15242 15243 18080 18081; do wait_port "$p"; done

# wrk prints "Requests/sec: N" and "Transfer/sec: N[KMG]B"
measure() { # url conns extra-args... -> "rps bytes_per_s"
  local url=$1 conns=$2; shift 2
  wrk -t1 -c"$conns" -d"${DURATION}s" "$@" "$url" 2>&1 | awk '
    /Requests\/sec/ { rps = $2 }
    /Transfer\/sec/ {
      v = $2; u = substr(v, length(v) - 1); n = substr(v, 1, length(v) - 2) + 0
      if (u == "KB") n *= 1024; else if (u == "MB") n *= 1048576; else if (u == "GB") n *= 1073741824
      else n = substr(v, 1, length(v) - 1) + 0
      bps = n
    }
    /Socket errors/ { err = err " " $0 }
    /Non-2xx/ { err = err " " $0; bad = 1 }
    END {
      # A run with errors measures the errors, not the proxy: report it as 0 and say why.
      if (bad) { print "wrk:" err > "/dev/stderr"; rps = 0; bps = 0 }
      printf "%s %s\n", rps + 0, bps + 0 }'
}

declare -A best
workloads=()
for w in "keepalive:/tiny:50" "close:/tiny:50" "1mib:/1m:8"; do
  [[ -z "${ONLY:-}" || " $ONLY " == *" ${w%%:*} "* ]] && workloads+=("$w")
done
targets=()
for t in "direct:15241" "haproxy:18080" "maas-vip:18081"; do
  [[ -z "${TARGETS:-}" || " $TARGETS " == *" ${t%%:*} "* ]] && targets+=("$t")
done
for round in $(seq "$ROUNDS"); do
  for w in "${workloads[@]}"; do
    IFS=: read -r wname path conns <<<"$w"
    extra=()
    [ "$wname" = close ] && extra=(-H "Connection: close")
    for t in "${targets[@]}"; do
      IFS=: read -r tname port <<<"$t"
      read -r rps bps < <(measure "http://127.0.0.1:$port$path" "$conns" "${extra[@]}")
      echo "round $round $wname $tname: $rps req/s $bps B/s" >&2
      key="$wname/$tname"
      prev=${best[$key]:-0 0}
      if awk -v a="$rps" -v b="${prev%% *}" 'BEGIN { exit !(a > b) }'; then best[$key]="$rps $bps"; fi
    done
  done
done

echo
echo "| workload | direct | HAProxy 2.6 tcp | maas-vip tcp | maas-vip / HAProxy | maas-vip / direct | HAProxy / direct |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for w in "${workloads[@]}"; do
  IFS=: read -r wname path conns <<<"$w"
  col=1 unit="req/s" label=""
  case $wname in
    keepalive) label="keep-alive, $conns conns, tiny body";;
    close) label="one connection per request, $conns conns";;
    1mib) label="1 MiB bodies, $conns conns"; col=2; unit="MB/s";;
  esac
  vals=()
  for t in direct haproxy maas-vip; do
    v=$(echo "${best[$wname/$t]:-0 0}" | awk -v c="$col" '{ print $c }')
    vals+=("$v")
  done
  awk -v l="$label" -v u="$unit" -v d="${vals[0]}" -v h="${vals[1]}" -v m="${vals[2]}" 'BEGIN {
    s = (u == "MB/s") ? 1048576 : 1
    printf "| %s | %.0f %s | %.0f %s | %.0f %s | %.2f | %.2f | %.2f |\n", l, d/s, u, h/s, u, m/s, u,
      (h > 0 ? m/h : 0), (d > 0 ? m/d : 0), (d > 0 ? h/d : 0) }'
done
echo
echo "$(date -u +%Y-%m-%d), $(nproc) cores, wrk -t1 -d${DURATION}s, best of $ROUNDS round(s); $(haproxy -v | head -1 | cut -d' ' -f1-3); $(nginx -v 2>&1 | cut -d' ' -f3)"
