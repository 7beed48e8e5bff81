#!/bin/sh
# Builds the seed corpora of the fuzz targets from the project's test data:
#   vrrp_packet, arp_frame: the captured frames of ../shared/testdata/vrrp-frames.txt (hex, one
#     a line; VRRP ones stored as the IPv4 packet and as the bare VRRP message, ARP ones whole);
#   config: conf/*.toml;  keepalived_import, haproxy_import: tests/fixtures/import/*;
#   http_response: server responses (the cases of lb/src/upstream.rs's tests and of
#     tests/tests/http_hostile.rs, alone and followed by a second response), each behind the
#     target's two selector bytes (method, read sizes).
# Seeds are written to fuzz/seeds/<target>/ (committed); the corpora that grow while fuzzing
# live in fuzz/corpus/<target>/ (not committed). Idempotent.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
frames=${FRAMES:-$root/../shared/testdata/vrrp-frames.txt}
[ -f "$frames" ] || frames=$root/vrrp/tests/data/vrrp-frames.txt
seeds=$here/seeds
mkdir -p "$seeds/vrrp_packet" "$seeds/arp_frame" "$seeds/config" \
    "$seeds/keepalived_import" "$seeds/haproxy_import" "$seeds/http_response" "$seeds/auth_hmac"

python3 - "$frames" "$seeds" <<'PY'
import sys, os, hashlib
frames, seeds = sys.argv[1], sys.argv[2]
def put(target, b):
    name = hashlib.sha1(b).hexdigest()
    with open(os.path.join(seeds, target, name), "wb") as f:
        f.write(b)
for line in open(frames):
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    b = bytes.fromhex(line)
    ethertype = b[12:14]
    if ethertype == b"\x08\x06":
        put("arp_frame", b)
    elif ethertype == b"\x08\x00":
        ip = b[14:]
        total = int.from_bytes(ip[2:4], "big")
        ihl = (ip[0] & 0x0f) * 4
        put("vrrp_packet", ip[:total])          # as the raw socket reads it
        put("vrrp_packet", ip[ihl:total])       # the bare VRRP message
    elif ethertype == b"\x86\xdd":
        ip = b[14:]
        plen = int.from_bytes(ip[4:6], "big")
        put("vrrp_packet", ip[40:40 + plen])
PY
cp "$root"/conf/*.toml "$seeds/config/"
for f in "$root"/tests/fixtures/import/*; do
    case $f in
        *keepalived*) cp "$f" "$seeds/keepalived_import/" ;;
        *.cfg) cp "$f" "$seeds/haproxy_import/" ;;
    esac
done
# The config tests' constant texts (r#"..."# literals of config/src/tests.rs).
python3 - "$root/config/src/tests.rs" "$seeds/config" <<'PY'
import sys, re, hashlib, os
src = open(sys.argv[1]).read()
for m in re.finditer(r'r#"(.*?)"#', src, re.S):
    b = m.group(1).encode()
    with open(os.path.join(sys.argv[2], hashlib.sha1(b).hexdigest()), "wb") as f:
        f.write(b)
PY
# The configs are also good material for each other's parsers (same tokens, other grammar).
for f in "$root"/tests/fixtures/import/*.cfg; do cp "$f" "$seeds/config/"; done
# Server responses for http_response: byte 0 picks the method (0 GET, 1 HEAD, 2 POST,
# 3 OPTIONS), byte 1 the read sizes, then the server's bytes.
python3 - "$seeds/http_response" <<'PY'
import sys, os, hashlib
out = sys.argv[1]
R = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n5;ext=1\r\nhello\r\n0\r\nTrailer: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n",
    b"HTTP/1.1 200 OK\r\n\r\nall of it",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nab",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nframe",
    b"SSH-2.0-OpenSSH\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n",
]
def put(b):
    with open(os.path.join(out, hashlib.sha1(b).hexdigest()), "wb") as f:
        f.write(b)
second = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
for i, r in enumerate(R):
    put(bytes([0, i * 37 % 256]) + r)
    put(bytes([i % 4, 0xff - i]) + r + second)
put(bytes([1, 7]) + b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n" + second)
PY
# auth_hmac: keepalived 2.4.3's signed adverts (VRRP message + trailer, the IPv4 payload of
# vrrp/tests/data/auth-hmac-keepalived-2.4.3.txt) behind the target's two selector bytes (where
# a mutation goes, its mask), a key file value and a state file.
python3 - "$root/vrrp/tests/data/auth-hmac-keepalived-2.4.3.txt" "$seeds/auth_hmac" <<'PY'
import sys, os, hashlib
out = sys.argv[2]
def put(b):
    with open(os.path.join(out, hashlib.sha1(b).hexdigest()), "wb") as f:
        f.write(b)
n = 0
for line in open(sys.argv[1]):
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    b = bytes.fromhex(line)
    if b[12:14] != b"\x08\x00":
        continue
    ip = b[14:]
    total = int.from_bytes(ip[2:4], "big")
    ihl = (ip[0] & 0x0f) * 4
    put(bytes([n * 7 % 256, 1 << (n % 8)]) + ip[ihl:total])
    n += 1
put(b"\x03\x01hex:c0ffee00112233445566778899aabbccddeeff00112233445566778899aabbcc")
put(b"\x00\x00maas-vip auth_hmac state 1\nsent 6b0fb8331c8b0000\nmark 10.99.0.12 6b0fb836602c0000\nmark fe80::1 6b0fb836602c0001\n")
PY
for t in vrrp_packet arp_frame config keepalived_import haproxy_import http_response auth_hmac; do
    echo "$t: $(ls "$seeds/$t" | wc -l) seeds"
done

# Dictionaries (libFuzzer -dict): the keywords each grammar knows, so mutations hit them.
mkdir -p "$here/dict"
python3 - "$root" "$here/dict" <<'PY'
import sys, re, os, glob
root, out = sys.argv[1], sys.argv[2]
def write(name, words):
    with open(os.path.join(out, name + ".dict"), "w") as f:
        f.write("# Generated by fuzz/seed.sh\n")
        for w in sorted(set(words)):
            esc = "".join(
                chr(b) if 0x20 <= b < 0x7f and chr(b) not in '"\\' else "\\x%02X" % b
                for b in w.encode())
            f.write('"' + esc + '"\n')
def quoted(path):
    return re.findall(r'"([A-Za-z_][A-Za-z0-9_.-]{1,40})"', open(path).read())
def fixture_words(pattern):
    words = []
    for p in glob.glob(pattern):
        words += re.findall(r"[A-Za-z_][A-Za-z0-9_-]{2,40}", open(p).read())
    return words
imp = root + "/import/src"
write("keepalived_import", quoted(imp + "/keepalived.rs")
      + fixture_words(root + "/tests/fixtures/import/*keepalived*") + ["{", "}", "\\\n", "!", "#", "@^"])
write("haproxy_import", quoted(imp + "/haproxy.rs")
      + fixture_words(root + "/tests/fixtures/import/*.cfg") + ["\\ ", "#", "\"", "'", ":", "ms", "s", "m", "h", "d"])
keys = []
for p in glob.glob(root + "/conf/*.toml"):
    keys += re.findall(r"^\s*#?\s*([a-z_]+)\s*=", open(p).read(), re.M)
    keys += re.findall(r"([a-z_]+)\s*=", open(p).read())
design = os.path.join(root, "..", "shared", "DESIGN.md")
if os.path.exists(design):
    keys += re.findall(r"([a-z_]+)\s*=", open(design).read())
write("config", [k + " = " for k in keys] + keys + [
    "[[vrrp]]\n", "[[frontend]]\n", "[[frontend.server]]\n", "[[vrrp.track_script]]\n",
    "[admin]\n", "tcp", "http", "roundrobin", "source", "MASTER", "BACKUP", "1s", "200ms",
    "1h", "127.0.0.1:80", "[::1]:80", "10.0.0.100/24", "{ ", " }", "[", "]", "\"", "'''",
    "\"\"\"", "\\u00e9", "\n", "é", "\t"])
write("http_response", [
    "HTTP/1.1 ", "HTTP/1.0 ", "200 OK", "100 Continue", "101 Switching Protocols", "204", "304",
    "\r\n", "\r\n\r\n", "\n", "Content-Length: ", "content-length:", "Transfer-Encoding: ",
    "chunked", "gzip", "identity", ", ", "Connection: close", "Connection: keep-alive",
    "Upgrade: websocket", "0\r\n\r\n", ";ext=1", "Trailer: x", "ffffffffffffffff", " \t"])
PY
for d in "$here"/dict/*.dict; do echo "$(basename "$d"): $(grep -vc '^#' "$d") words"; done
