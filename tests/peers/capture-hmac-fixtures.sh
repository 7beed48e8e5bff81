#!/usr/bin/env bash
# Captures the adverts of two keepalived 2.4.3 instances that sign with `auth_hmac`, on a LAN
# of network namespaces, for VRRPv2 and VRRPv3, and writes them as test fixtures:
#
#   vrrp/tests/data/auth-hmac-keepalived-2.4.3.txt          the frames (hex), keys, configs
#   vrrp/tests/data/auth-hmac-keepalived-2.4.3.tshark.txt   tshark's view of the same frames
#
# Run as root, by hand, when the fixtures must be made again (CI does not run it: the fixtures
# are committed). Builds keepalived 2.4.3 first if needed (tests/peers/build-keepalived-2.4.sh).
# Nothing outside the namespaces it creates is touched; they are deleted on exit.
#
# What runs: h0 (10.99.0.11, priority 150, signs with key 1) and h1 (10.99.0.12, priority 100,
# signs with key 2); both hold both keys, as in the middle of a rotation. Key 1 is inline hex,
# key 2 an ASCII string read from a file (file:). h0 becomes master, h1 joins, h0 is stopped
# (its priority-0 advert), h1 takes over, then h1 is stopped.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
ka=$("$root/tests/peers/build-keepalived-2.4.sh")
out=$root/vrrp/tests/data/auth-hmac-keepalived-2.4.3.txt
tsh=$root/vrrp/tests/data/auth-hmac-keepalived-2.4.3.tshark.txt

key1_hex=c0ffee00112233445566778899aabbccddeeff00112233445566778899aabbcc
key2_ascii='maas-vip fixture key 2, 32 bytes'
[ ${#key2_ascii} -eq 32 ] || { echo "key 2 must be 32 bytes" >&2; exit 1; }

tag=mvk$$
br=$tag-br
work=$(mktemp -d)
cleanup() {
  for ns in "$tag-h0" "$tag-h1" "$br"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
[ -n "${KEEP_CAPTURE:-}" ] && trap - EXIT

ip netns add "$br"
ip -n "$br" link set lo up
ip -n "$br" link add br0 type bridge
ip -n "$br" link set br0 type bridge mcast_snooping 0
ip -n "$br" link set br0 up
for i in 0 1; do
  ns=$tag-h$i
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip -n "$br" link add "p$i" type veth peer name eth0 netns "$ns"
  ip -n "$br" link set "p$i" master br0 up
  ip -n "$ns" addr add "10.99.0.1$((i + 1))/24" dev eth0
  ip -n "$ns" link set eth0 up
done

printf '%s\n' "$key2_ascii" >"$work/key2"
chmod 600 "$work/key2"

# config HOST VERSION PRIORITY ACTIVE_KEY
config() {
  cat <<EOF
global_defs {
    router_id fixture_h$1
    vrrp_version $2
}
vrrp_instance maas_region {
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority $3
    advert_int 1
    auth_hmac {
        key 1 hex:$key1_hex
        key 2 file:KEY2
        active_key $4
    }
    virtual_ipaddress {
        10.99.0.100/24
    }
}
EOF
}

wait_log() { # FILE TEXT SECONDS
  for _ in $(seq $(($3 * 10))); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "timed out waiting for '$2' in $1:" >&2
  cat "$1" >&2
  return 1
}

start_ka() { # HOST VERSION PRIORITY ACTIVE_KEY
  config "$1" "$2" "$3" "$4" | sed "s|KEY2|$work/key2|" >"$work/h$1-v$2.conf"
  ip netns exec "$tag-h$1" "$ka" -n -l -D -f "$work/h$1-v$2.conf" \
    -p "$work/h$1.pid" -r "$work/h$1-vrrp.pid" -c "$work/h$1-chk.pid" \
    >"$work/h$1-v$2.log" 2>&1 &
  started=$!
}

{
  echo "# VRRP adverts signed by keepalived 2.4.3 (auth_hmac: HMAC-SHA256/128 trailer), captured with"
  echo "# tcpdump on h0's eth0 by tests/peers/capture-hmac-fixtures.sh on $(date -u +%Y-%m-%d)."
  echo "# Each frame: a line '# N t=<capture time, s since the epoch> <tshark summary>', then the whole"
  echo "# Ethernet frame as hex. The IPv4 payload is the VRRP message followed by the 28-byte trailer."
  echo "#"
  echo "# key 1 (signs on h0) = hex:$key1_hex"
  echo "# key 2 (signs on h1) = the 32 ASCII bytes '$key2_ascii', read from a file (mode 0600)"
  echo "#   holding that line and a newline"
  echo "# h0 = 10.99.0.11 priority 150 active_key 1; h1 = 10.99.0.12 priority 100 active_key 2"
  echo "# Both run this config (router_id, priority and active_key differ; KEY2 = the key file):"
  config 0 VERSION PRIORITY ACTIVE | sed 's/^/#   /'
} >"$out"
: >"$tsh"

for v in 2 3; do
  cap=$work/v$v.pcap
  ip netns exec "$tag-h0" tcpdump -i eth0 -U -n -w "$cap" 'ip proto 112' >"$work/tcpdump-v$v.log" 2>&1 &
  tcpd=$!
  wait_log "$work/tcpdump-v$v.log" "listening on" 5
  start_ka 0 "$v" 150 1; p0=$started
  wait_log "$work/h0-v$v.log" "Entering MASTER STATE" 10
  start_ka 1 "$v" 100 2; p1=$started
  wait_log "$work/h1-v$v.log" "Entering BACKUP STATE" 10
  sleep 2.5
  kill -TERM "$p0"; wait "$p0" || true
  wait_log "$work/h1-v$v.log" "Entering MASTER STATE" 10
  sleep 2.5
  kill -TERM "$p1"; wait "$p1" || true
  sleep 0.5
  kill -TERM "$tcpd"; wait "$tcpd" || true
  for f in "$work/h0-v$v.log" "$work/h1-v$v.log"; do
    if grep -Eiq 'auth_hmac|authentication|hmac' "$f"; then
      echo "keepalived complained in $f:" >&2; cat "$f" >&2; exit 1
    fi
  done

  {
    echo
    echo "# ---- VRRPv$v"
  } >>"$out"
  tshark -r "$cap" -T fields -E separator=' ' -e frame.number -e frame.time_epoch \
    -e ip.src -e vrrp.version -e vrrp.virt_rtr_id -e vrrp.prio -e vrrp.addr_count \
    -e vrrp.checksum 2>/dev/null >"$work/summary"
  tcpdump -r "$cap" -tt -xx -n 2>/dev/null | awk '
    /^[0-9]+\.[0-9]+ / { if (hex != "") print hex; hex = ""; next }
    /^[ \t]+0x/ { for (i = 2; i <= NF; i++) hex = hex $i }
    END { if (hex != "") print hex }' >"$work/hex"
  [ "$(wc -l <"$work/summary")" -eq "$(wc -l <"$work/hex")" ] || { echo "frame count mismatch" >&2; exit 1; }
  paste -d '\n' \
    <(awk '{printf "# %s t=%s src=%s version=%s vrid=%s prio=%s count=%s checksum=%s\n", $1, $2, $3, $4, $5, $6, $7, $8}' "$work/summary") \
    "$work/hex" >>"$out"
  {
    echo "==== VRRPv$v: tshark -V (TShark $(tshark --version 2>/dev/null | head -1 | awk '{print $3}'))"
    tshark -r "$cap" -V -x 2>/dev/null
  } >>"$tsh"
done
echo "wrote $out and $tsh"
