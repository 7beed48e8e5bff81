#!/usr/bin/env bash
# Side-by-side proxy benchmark: three nginx stand-in regions on loopback, HAProxy and maas-vip in
# front of them with the MAAS guide's settings, and wrk against each proxy and directly against a
# region. Prints requests/s, bytes/s and latency with ratios measured in the same run (the
# machine is shared and noisy: only ratios from one run mean anything).
#
#   benches/compare.sh                                   # 10 s per measurement, best of 2 rounds
#   DURATION=5 ROUNDS=1 benches/compare.sh
#   ONLY="keepalive l7" TARGETS="haproxy maas-vip" benches/compare.sh   # a subset while iterating
#   MAAS_VIP_BIN=/path/to/maas-vip benches/compare.sh    # skip the build
#   KEEP=1 benches/compare.sh                            # keep the work directory (logs)
#   MAAS_VIP_TOP='workers = 1' benches/compare.sh          # extra top-level maas-vip.toml keys
#   PACE_MS=4 ONLY=paced benches/compare.sh              # latency and CPU at a lighter fixed load
#
# Workloads: keepalive (L4, tiny body, 50 keep-alive connections), close (L4, one connection per
# request), 1mib (L4, 1 MiB bodies, 8 connections), l7 (http mode, tiny body, 50 keep-alive
# client connections), dying (L4, one connection per request, one of three regions killed a third
# of the way through; throughput as a ratio of the same run without the kill), paced (latency at
# the same load for every target: 50 keep-alive connections that each wait PACE_MS, default 2,
# between a response and the next request, in tcp and in http mode, and in tcp with a connection
# per request; saturated runs give each target its own load, so their latencies are not
# comparable as such). The paced runs also give the CPU each proxy spent per request it served
# (utime + stime of its process from /proc/PID/stat, before and after, over wrk's request count):
# the cost an operator pays at a given load whatever the scheduler does, as a ratio to HAProxy.
#
# The floor: benches/floor/minproxy.c, built with cc when there is one (NO_FLOOR=1: not), is a
# proxy that does nothing but move bytes, as a plain epoll + read/write loop and with a BPF sockmap
# moving the payload in the kernel; benches/floor/uringproxy.c is the same on io_uring (multishot
# accept and recv, a provided buffer ring, one submit-and-wait per loop turn; needs liburing-dev).
# They show how far any proxy could go on this machine.
#
# Every proxy runs in its own session (setsid), as under a service manager. With the scheduler's
# autogroups (kernel.sched_autogroup_enabled=1), a proxy left in this script's session shares one
# CPU share with wrk; that moved HAProxy's keep-alive figure by 15% in one run.
#
# Needs: nginx, haproxy, wrk (apt-get install nginx-light haproxy wrk); for the io_uring floor
# liburing-dev and a kernel with io_uring enabled. Everything listens on
# 127.0.0.1 only; all processes are stopped on exit.
set -euo pipefail

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-2}
ONLY=${ONLY:-keepalive close 1mib l7 paced dying}
PACE_MS=${PACE_MS:-2}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/maas-vip-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for i in 1 2 3; do
    if [ -f "$work/nginx$i/nginx.pid" ]; then
      pid=$(cat "$work/nginx$i/nginx.pid")
      kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    fi
  done
  wait 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "compare.sh: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

# HAProxy needs 2 x maxconn descriptors.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# Anything left on these ports (a stale nginx from an interrupted run) would answer in place of
# the regions and spoil the figures: refuse to start.
for p in 15241 15242 15243 18080 18081 18082 18083 18084 18085 18086 18087 18088 18089; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "compare.sh: 127.0.0.1:$p is already in use; stop what listens there first" >&2
    exit 2
  fi
done

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
start_region() { # i
  local i=$1 port=$((15240 + $1))
  mkdir -p "$work/nginx$i"
  cat > "$work/nginx$i/nginx.conf" <<EOF
worker_processes 1;
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
  # Daemonized: its master and worker are stopped together through the pid file.
  nginx -c "$work/nginx$i/nginx.conf" -p "$work/nginx$i"
}
kill_region() { # i: SIGKILL master and worker together, as a crashed host would vanish
  local pid
  pid=$(cat "$work/nginx$1/nginx.pid")
  # A daemonized nginx master leads its own process group, workers included.
  kill -9 -- "-$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
  rm -f "$work/nginx$1/nginx.pid"
  while (exec 3<>"/dev/tcp/127.0.0.1/$((15240 + $1))") 2>/dev/null; do sleep 0.05; done
}
for i in 1 2 3; do start_region "$i"; done

# --- HAProxy 2.6: the guide's settings, in tcp and http mode ------------------------------------
servers="  server r1 127.0.0.1:15241 check inter 1s fall 2 rise 2
  server r2 127.0.0.1:15242 check inter 1s fall 2 rise 2
  server r3 127.0.0.1:15243 check inter 1s fall 2 rise 2"
# maas-vip's http frontends add X-Forwarded-For and X-Forwarded-Proto (forwardfor = true, the
# default); HAProxy's are told to do the same, so both send the regions the same requests.
cat > "$work/haproxy.cfg" <<EOF
global
  maxconn 8000
defaults
  timeout connect 5s
  timeout client 30s
  timeout server 90s
  retries 3
  option redispatch
frontend maas_tcp
  mode tcp
  bind 127.0.0.1:18080
  default_backend tcp
backend tcp
  mode tcp
  balance roundrobin
$servers
frontend maas_http_close
  mode http
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  bind 127.0.0.1:18082
  option http-server-close
  default_backend http_close
backend http_close
  mode http
  balance roundrobin
  option http-server-close
$servers
frontend maas_http_ka
  mode http
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  bind 127.0.0.1:18083
  default_backend http_ka
backend http_ka
  mode http
  balance roundrobin
$servers
EOF
setsid haproxy -f "$work/haproxy.cfg" -q 2>"$work/haproxy.log" &
pids+=($!)

# --- maas-vip: the same, tcp and http mode -----------------------------------------------------
mv_servers='[[frontend.server]]
name = "r1"
address = "127.0.0.1:15241"
[[frontend.server]]
name = "r2"
address = "127.0.0.1:15242"
[[frontend.server]]
name = "r3"
address = "127.0.0.1:15243"'
# The tcp frontend, on port $1 (the epoll and the io_uring instance).
mv_tcp() {
  cat <<EOF
[[frontend]]
name = "tcp"
bind = ["127.0.0.1:$1"]
mode = "tcp"
maxconn = 8000
check = { kind = "tcp", interval = "1s", rise = 2, fall = 2 }
$mv_servers
EOF
}
# MAAS_VIP_TOP: extra top-level keys for experiments, e.g. MAAS_VIP_TOP='workers = 1'.
cat > "$work/maas-vip.toml" <<EOF
${MAAS_VIP_TOP:-}
$(mv_tcp 18081)
[[frontend]]
name = "http"
bind = ["127.0.0.1:18084"]
mode = "http"
maxconn = 8000
check = { kind = "tcp", interval = "1s", rise = 2, fall = 2 }
$mv_servers
[[frontend]]
name = "http_close"
bind = ["127.0.0.1:18085"]
mode = "http"
http_server_close = true
maxconn = 8000
check = { kind = "tcp", interval = "1s", rise = 2, fall = 2 }
$mv_servers
[admin]
enabled = false
EOF
# HAProxy runs without a `log` line, so maas-vip runs with its access log off too.
RUST_LOG=warn setsid "$bin" run -c "$work/maas-vip.toml" 2>"$work/maas-vip.log" &
pids+=($!)
declare -A pid_of # target -> the process whose CPU the paced runs count
pid_of[haproxy]=${pids[0]} pid_of[haproxy-ka]=${pids[0]} pid_of[maas-vip]=${pids[1]}
# The same tcp frontend on the io_uring engines (io = "io_uring"), as its own process.
cat > "$work/maas-vip-uring.toml" <<EOF
${MAAS_VIP_TOP:-}
io = "io_uring"
$(mv_tcp 18089)
[admin]
enabled = false
EOF
RUST_LOG=warn setsid "$bin" run -c "$work/maas-vip-uring.toml" 2>"$work/maas-vip-uring.log" &
pids+=($!)
pid_of[maas-vip-uring]=${pids[2]}

# --- the floor: benches/floor/minproxy.c, a proxy that only moves bytes (no timeouts, checks or
# logs), as a plain epoll read/write loop and with the payload moved in the kernel by a BPF
# sockmap. Needs a C compiler; the sockmap needs root (CAP_BPF + CAP_NET_ADMIN).
floor_ports=()
if [ -z "${NO_FLOOR:-}" ] && command -v cc >/dev/null \
  && cc -O2 -o "$work/minproxy" "$here/benches/floor/minproxy.c" 2>"$work/minproxy-build.log"; then
  setsid "$work/minproxy" 18086 copy 15241 15242 15243 2>"$work/floor.log" &
  pids+=($!)
  pid_of[floor]=$!
  floor_ports+=(18086)
  setsid "$work/minproxy" 18087 sockmap 15241 15242 15243 2>"$work/sockmap.log" &
  pids+=($!)
  sleep 0.2
  if kill -0 "${pids[-1]}" 2>/dev/null; then floor_ports+=(18087); else
    echo "compare.sh: no sockmap floor: $(head -1 "$work/sockmap.log")" >&2
  fi
  if [ "$(cat /proc/sys/kernel/io_uring_disabled 2>/dev/null || echo 0)" != 0 ]; then
    echo "compare.sh: no io_uring floor: kernel.io_uring_disabled is set" >&2
  elif ! cc -O2 -o "$work/uringproxy" "$here/benches/floor/uringproxy.c" -luring \
    2>"$work/uringproxy-build.log"; then
    echo "compare.sh: no io_uring floor: it does not build (apt-get install liburing-dev): $(head -1 "$work/uringproxy-build.log")" >&2
  else
    setsid "$work/uringproxy" 18088 15241 15242 15243 2>"$work/uring.log" &
    pids+=($!)
    pid_of[uring]=$!
    sleep 0.2
    if kill -0 "${pids[-1]}" 2>/dev/null; then floor_ports+=(18088); else
      echo "compare.sh: no io_uring floor: $(head -1 "$work/uring.log")" >&2
    fi
  fi
else
  echo "compare.sh: no floor proxy (NO_FLOOR set, or no C compiler)" >&2
fi

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "compare.sh: nothing listens on 127.0.0.1:$1" >&2
  tail -n 5 "$work"/*.log >&2 || true
  exit 1
}
for p in 15241 15242 15243 18080 18081 18082 18083 18084 18085 18089 "${floor_ports[@]}"; do wait_port "$p"; done
floor() { # the floor targets that run, for a workload: "floor", "uring" and (keep-alive only)
  # "sockmap"
  local p
  for p in "${floor_ports[@]}"; do
    case $p in
      18086) echo floor:18086;;
      18087) [ "$1" = keepalive ] && echo sockmap:18087;;
      18088) echo uring:18088;;
    esac
  done
  return 0
}

# wrk: "Requests/sec: N", "Transfer/sec: N[KMG]B", latency percentiles with --latency.
measure() { # port path conns seconds [wrk args] -> "rps bytes_per_s p50_ms p99_ms errors requests"
  local port=$1 path=$2 conns=$3 secs=$4; shift 4
  wrk -t1 -c"$conns" -d"${secs}s" --latency "$@" "http://127.0.0.1:$port$path" 2>&1 | awk '
    function ms(v,  n, u) {
      n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
      if (u == "us") return n / 1000; if (u == "s") return n * 1000; return n
    }
    /Requests\/sec/ { rps = $2 }
    /Transfer\/sec/ {
      v = $2; u = substr(v, length(v) - 1); n = substr(v, 1, length(v) - 2) + 0
      if (u == "KB") n *= 1024; else if (u == "MB") n *= 1048576; else if (u == "GB") n *= 1073741824
      else n = substr(v, 1, length(v) - 1) + 0
      bps = n
    }
    /^ +50%/ { p50 = ms($2) }
    /^ +99%/ { p99 = ms($2) }
    / requests in / { reqs = $1 }
    /Socket errors/ { gsub(/,/, ""); err += $4 + $6 + $8 + $10 }
    /Non-2xx/ { err += $5 }
    END { printf "%s %s %s %s %d %d\n", rps + 0, bps + 0, p50 + 0, p99 + 0, err + 0, reqs + 0 }'
}
cpu_ticks() { # pid -> utime + stime of the process (all its threads), in clock ticks
  # Fields after the command name, which is in parentheses and may hold spaces: utime is the
  # 12th and stime the 13th of them.
  sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

# wrk calls delay() before each request of a connection: a fixed offered load.
printf 'function delay()\n  return %s\nend\n' "$PACE_MS" > "$work/paced.lua"

declare -A best cpu
hz=$(getconf CLK_TCK)
keep_cpu() { # key ticks requests: keeps the lowest CPU per request, in microseconds
  local v
  v=$(awk -v t="$2" -v n="$3" -v hz="$hz" 'BEGIN { if (n > 0) printf "%.2f", t / hz / n * 1e6 }')
  [ -n "$v" ] || return 0
  if [ -z "${cpu[$1]:-}" ] || awk -v a="$v" -v b="${cpu[$1]}" 'BEGIN { exit !(a < b) }'; then
    cpu[$1]=$v
  fi
}
keep_best() { # key "rps bps p50 p99 err": keeps the run with the most requests/s (paced
  # runs, whose load is fixed: the lowest p99)
  local prev=${best[$1]:-}
  if [ -z "$prev" ]; then best[$1]=$2; return; fi
  if [[ $1 == paced-* ]]; then
    if awk -v a="$(echo "$2" | cut -d' ' -f4)" -v b="$(echo "$prev" | cut -d' ' -f4)" 'BEGIN { exit !(a < b) }'; then best[$1]=$2; fi
  elif awk -v a="${2%% *}" -v b="${prev%% *}" 'BEGIN { exit !(a > b) }'; then best[$1]=$2; fi
}
wants() { [[ " $ONLY " == *" $1 "* ]]; }
targets() { # the targets of a workload, filtered by $TARGETS
  local t
  for t in "$@"; do
    if [[ -z "${TARGETS:-}" || " $TARGETS " == *" ${t%%:*} "* ]]; then echo "$t"; fi
  done
}

for round in $(seq "$ROUNDS"); do
  for w in keepalive close 1mib l7 paced-tcp paced-close paced-http; do
    wants "${w%%-*}" || continue
    case $w in
      keepalive) path=/tiny conns=50 extra=() list=$(targets direct:15241 haproxy:18080 maas-vip:18081 maas-vip-uring:18089 $(floor keepalive));;
      close) path=/tiny conns=50 extra=(-H "Connection: close") list=$(targets direct:15241 haproxy:18080 maas-vip:18081 maas-vip-uring:18089 $(floor close));;
      1mib) path=/1m conns=8 extra=() list=$(targets direct:15241 haproxy:18080 maas-vip:18081 maas-vip-uring:18089);;
      l7) path=/tiny conns=50 extra=() list=$(targets direct:15241 haproxy-close:18082 haproxy-ka:18083 maas-vip:18084 maas-vip-close:18085);;
      paced-tcp) path=/tiny conns=50 extra=(-s "$work/paced.lua") list=$(targets direct:15241 haproxy:18080 maas-vip:18081 maas-vip-uring:18089 $(floor close));;
      paced-close) path=/tiny conns=50 extra=(-s "$work/paced.lua" -H "Connection: close") list=$(targets direct:15241 haproxy:18080 maas-vip:18081 maas-vip-uring:18089 $(floor close));;
      paced-http) path=/tiny conns=50 extra=(-s "$work/paced.lua") list=$(targets direct:15241 haproxy-ka:18083 maas-vip:18084);;
    esac
    for t in $list; do
      p=${pid_of[${t%%:*}]:-}
      [ -n "$p" ] && c0=$(cpu_ticks "$p")
      r=$(measure "${t#*:}" "$path" "$conns" "$DURATION" "${extra[@]}")
      echo "round $round $w ${t%%:*}: $r (req/s B/s p50ms p99ms errors requests)" >&2
      keep_best "$w/${t%%:*}" "$r"
      if [[ $w == paced-* && -n "$p" ]]; then
        keep_cpu "$w/${t%%:*}" "$(($(cpu_ticks "$p") - c0))" "$(echo "$r" | cut -d' ' -f6)"
      fi
    done
  done
done

# A region dies under load: connection-per-request throughput with r3 killed a third of the way
# through, over the same load without the kill.
if wants dying; then
  for t in $(targets haproxy:18080 maas-vip:18081); do
    r=$(measure "${t#*:}" /tiny 50 "$DURATION" -H "Connection: close")
    best["normal/${t%%:*}"]=$r
    (sleep "$(awk -v d="$DURATION" 'BEGIN { print d / 3 }')"; kill_region 3) &
    killer=$!
    r=$(measure "${t#*:}" /tiny 50 "$DURATION" -H "Connection: close")
    wait "$killer"
    best["dying/${t%%:*}"]=$r
    echo "dying ${t%%:*}: normal ${best[normal/${t%%:*}]} killed $r" >&2
    start_region 3
    wait_port 15243
    sleep 3 # checks see it up again (rise 2 x 1s)
  done
fi

col() { echo "${best[$1]:-0 0 0 0 0 0}" | awk -v c="$2" '{ print $c }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }'; }

echo
if wants keepalive || wants close || wants 1mib || wants l7; then
  echo "| workload | direct | HAProxy 2.6 | maas-vip | maas-vip / HAProxy | maas-vip / direct |"
  echo "| --- | --- | --- | --- | --- | --- |"
fi
row() { # label unit column key-direct key-haproxy key-maas-vip
  local d h m s=1
  [ "$2" = "MB/s" ] && s=1048576
  d=$(col "$4" "$3"); h=$(col "$5" "$3"); m=$(col "$6" "$3")
  printf "| %s | %s | %s | %s | %s | %s |\n" "$1" \
    "$(awk -v v="$d" -v s=$s -v u="$2" 'BEGIN { if (v > 0) printf "%.0f %s", v/s, u; else printf "-" }')" \
    "$(awk -v v="$h" -v s=$s -v u="$2" 'BEGIN { if (v > 0) printf "%.0f %s", v/s, u; else printf "-" }')" \
    "$(awk -v v="$m" -v s=$s -v u="$2" 'BEGIN { if (v > 0) printf "%.0f %s", v/s, u; else printf "-" }')" \
    "$(ratio "$m" "$h")" "$(ratio "$m" "$d")"
}
wants keepalive && row "L4 keep-alive, 50 conns, tiny body (tcp)" "req/s" 1 keepalive/direct keepalive/haproxy keepalive/maas-vip
wants close && row "L4 one connection per request, 50 conns (tcp)" "req/s" 1 close/direct close/haproxy close/maas-vip
wants 1mib && row "L4 1 MiB bodies, 8 conns (tcp)" "MB/s" 2 1mib/direct 1mib/haproxy 1mib/maas-vip
wants keepalive && row "L4 keep-alive, 50 conns, tiny body (tcp, io = io_uring)" "req/s" 1 keepalive/direct keepalive/haproxy keepalive/maas-vip-uring
wants close && row "L4 one connection per request, 50 conns (tcp, io = io_uring)" "req/s" 1 close/direct close/haproxy close/maas-vip-uring
wants 1mib && row "L4 1 MiB bodies, 8 conns (tcp, io = io_uring)" "MB/s" 2 1mib/direct 1mib/haproxy 1mib/maas-vip-uring
if wants l7; then
  row "L7 per request, 50 conns: HAProxy http-server-close vs maas-vip pooled" "req/s" 1 l7/direct l7/haproxy-close l7/maas-vip
  row "L7 per request, 50 conns: both http-server-close" "req/s" 1 l7/direct l7/haproxy-close l7/maas-vip-close
  row "L7 per request, 50 conns: both keep-alive to servers" "req/s" 1 l7/direct l7/haproxy-ka l7/maas-vip
fi
echo
if [ ${#floor_ports[@]} -gt 0 ] && { wants keepalive || wants close; }; then
  echo "| the floor (req/s, and ratio to HAProxy) | minimal proxy, epoll + read/write | minimal proxy, io_uring | minimal proxy, BPF sockmap | HAProxy 2.6 | maas-vip |"
  echo "| --- | --- | --- | --- | --- | --- |"
  fcell() { # key key-haproxy: "req/s (ratio to HAProxy)", or "-" for a target that did not run
    local v
    v=$(col "$1" 1)
    if awk -v v="$v" 'BEGIN { exit !(v > 0) }'; then
      printf "%.0f (%s)" "$v" "$(ratio "$v" "$(col "$2" 1)")"
    else
      printf -- "-"
    fi
  }
  wants keepalive && echo "| L4 keep-alive, 50 conns, tiny body | $(fcell keepalive/floor keepalive/haproxy) | $(fcell keepalive/uring keepalive/haproxy) | $(fcell keepalive/sockmap keepalive/haproxy) | $(fcell keepalive/haproxy keepalive/haproxy) | $(fcell keepalive/maas-vip keepalive/haproxy) |"
  wants close && echo "| L4 one connection per request, 50 conns | $(fcell close/floor close/haproxy) | $(fcell close/uring close/haproxy) | - | $(fcell close/haproxy close/haproxy) | $(fcell close/maas-vip close/haproxy) |"
  echo
fi
if wants keepalive || wants l7; then
  echo "| latency at 50 conns, saturated (p50 / p99 ms) | direct | HAProxy 2.6 | maas-vip |"
  echo "| --- | --- | --- | --- |"
  lat() { echo "$(col "$1" 3) / $(col "$1" 4)"; }
  wants keepalive && echo "| L4 keep-alive | $(lat keepalive/direct) | $(lat keepalive/haproxy) | $(lat keepalive/maas-vip) |"
  wants l7 && echo "| L7 (HAProxy keep-alive) | $(lat l7/direct) | $(lat l7/haproxy-ka) | $(lat l7/maas-vip) |"
  echo
fi
if wants paced; then
  echo "| latency at the same load, 50 conns each pausing ${PACE_MS} ms (req/s; p50 / p99 ms) | direct | HAProxy 2.6 | maas-vip |"
  echo "| --- | --- | --- | --- |"
  plat() { echo "$(col "$1" 1 | awk '{ printf "%.0f", $1 }'); $(col "$1" 3) / $(col "$1" 4)"; }
  echo "| L4 keep-alive | $(plat paced-tcp/direct) | $(plat paced-tcp/haproxy) | $(plat paced-tcp/maas-vip) |"
  echo "| L4 keep-alive, io = io_uring | $(plat paced-tcp/direct) | $(plat paced-tcp/haproxy) | $(plat paced-tcp/maas-vip-uring) |"
  echo "| L4 one connection per request | $(plat paced-close/direct) | $(plat paced-close/haproxy) | $(plat paced-close/maas-vip) |"
  echo "| L4 one connection per request, io = io_uring | $(plat paced-close/direct) | $(plat paced-close/haproxy) | $(plat paced-close/maas-vip-uring) |"
  echo "| L7 (HAProxy keep-alive) | $(plat paced-http/direct) | $(plat paced-http/haproxy-ka) | $(plat paced-http/maas-vip) |"
  echo
  echo "| CPU per request at the same load (us of utime + stime; ratio to HAProxy) | HAProxy 2.6 | maas-vip | maas-vip, io = io_uring | minimal proxy, epoll | minimal proxy, io_uring |"
  echo "| --- | --- | --- | --- | --- | --- |"
  ccell() { # key key-haproxy: "us (ratio to HAProxy)", or "-" for a target that did not run
    if [ -n "${cpu[$1]:-}" ]; then printf "%s (%s)" "${cpu[$1]}" "$(ratio "${cpu[$1]}" "${cpu[$2]:-0}")"; else printf -- "-"; fi
  }
  echo "| L4 keep-alive | $(ccell paced-tcp/haproxy paced-tcp/haproxy) | $(ccell paced-tcp/maas-vip paced-tcp/haproxy) | $(ccell paced-tcp/maas-vip-uring paced-tcp/haproxy) | $(ccell paced-tcp/floor paced-tcp/haproxy) | $(ccell paced-tcp/uring paced-tcp/haproxy) |"
  echo "| L4 one connection per request | $(ccell paced-close/haproxy paced-close/haproxy) | $(ccell paced-close/maas-vip paced-close/haproxy) | $(ccell paced-close/maas-vip-uring paced-close/haproxy) | $(ccell paced-close/floor paced-close/haproxy) | $(ccell paced-close/uring paced-close/haproxy) |"
  echo "| L7 (HAProxy keep-alive) | $(ccell paced-http/haproxy-ka paced-http/haproxy-ka) | $(ccell paced-http/maas-vip paced-http/haproxy-ka) | - | - | - |"
  echo
fi
if wants dying; then
  echo "| one of three regions killed under load (L4, connection per request) | HAProxy 2.6 | maas-vip |"
  echo "| --- | --- | --- |"
  echo "| throughput, ratio to the same load without the kill | $(ratio "$(col dying/haproxy 1)" "$(col normal/haproxy 1)") | $(ratio "$(col dying/maas-vip 1)" "$(col normal/maas-vip 1)") |"
  echo "| failed requests (wrk errors) | $(col dying/haproxy 5) | $(col dying/maas-vip 5) |"
  echo
fi
echo "$(date -u +%Y-%m-%d), $(nproc) cores, wrk -t1 -d${DURATION}s, best of $ROUNDS round(s); $(haproxy -v | head -1 | cut -d' ' -f1-3); $(nginx -v 2>&1 | cut -d' ' -f3); maas-vip $("$bin" --version | cut -d' ' -f2)"
