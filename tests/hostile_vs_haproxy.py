#!/usr/bin/env python3
"""Hostile HTTP/1.1 requests and responses through HAProxy and maas-vip, side by side.

    tests/hostile_vs_haproxy.py [MAAS_VIP_BIN]     (default target/debug/maas-vip)

Starts a raw stand-in region on 127.0.0.1:18090 (it records each request as it arrives and
answers /echo/... with 200, /resp/<case> with the canned response of that case), HAProxy
(/usr/sbin/haproxy, mode http, option forwardfor) on :18080 and maas-vip (mode = "http") on
:18081, sends each case as raw bytes to both, and prints what the client got, what the region
saw, and maas-vip's access-log lines. The same cases are regression tests in
tests/tests/http_hostile.rs; this script is the side-by-side view the README's table comes from.
"""
import re, os, select, socket, subprocess, sys, tempfile, threading, time

BACKEND = 18090
seen = {}          # case id -> raw bytes the backend saw
deaf = []          # region sides of websocket tunnels that never read
RESP = {
    'gzipchunked': b'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n',
    'gzipclose': b'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\nabc',
    'badchunk': b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n',
    'cutshort': b'HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc',
    'badchunk-later': b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n',
}
def backend():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('127.0.0.1', BACKEND)); s.listen(100)
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
def serve(c):
    data = b''
    c.settimeout(2)
    try:
        while b'\r\n\r\n' not in data:
            d = c.recv(65536)
            if not d: break
            data += d
        c.settimeout(0.3)
        try:
            while True:
                d = c.recv(65536)
                if not d: break
                data += d
        except Exception: pass
    except Exception: pass
    if data.startswith(b'GET /ws '):
        # A websocket region that answers the upgrade, then never reads again.
        c.sendall(b'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n'
                  b'Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n')
        deaf.append(c)
        return
    m = re.match(rb'[A-Z]+ (?:http://[^/]*)?/(\w+)/([\w-]+)', data)
    kind, name = (m.group(1).decode(), m.group(2).decode()) if m else ('echo', '?')
    seen.setdefault(name, []).append(data)
    if kind == 'resp':
        c.sendall(RESP[name]); 
        if name == 'badchunk-later':
            time.sleep(0.3); c.sendall(b'zz\r\n')
        time.sleep(0.2)
    else:
        c.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok')
    c.close()

def req(port, b, wait=2.0):
    c = socket.create_connection(('127.0.0.1', port)); c.sendall(b); c.settimeout(wait)
    out = b''
    try:
        while True:
            d = c.recv(65536)
            if not d: break
            out += d
    except socket.timeout: out += b'<no close>'
    except Exception as e: out += b'<%s>' % type(e).__name__.encode()
    c.close()
    return out

CASES = [
    ('xff', b'GET /echo/xff HTTP/1.1\r\nHost: maas\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 10.9.9.9\r\nConnection: close\r\n\r\n'),
    ('host2', b'GET /echo/host2 HTTP/1.1\r\nHost: maas\r\nHost: evil\r\nConnection: close\r\n\r\n'),
    ('host2same', b'GET /echo/host2same HTTP/1.1\r\nHost: maas\r\nHost: maas\r\nConnection: close\r\n\r\n'),
    ('absuri', b'GET http://evil/echo/absuri HTTP/1.1\r\nHost: maas\r\nConnection: close\r\n\r\n'),
    ('absuri-same', b'GET http://maas/echo/absuri-same HTTP/1.1\r\nHost: maas\r\nConnection: close\r\n\r\n'),
    ('conn-names', b'GET /echo/conn-names HTTP/1.1\r\nHost: maas\r\nConnection: close, a, b, c, d, X-Secret\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nX-Secret: s\r\n\r\n'),
    ('conn-host', b'GET /echo/conn-host HTTP/1.1\r\nHost: maas\r\nConnection: close, Host\r\n\r\n'),
    ('conn-cl', b'POST /echo/conn-cl HTTP/1.1\r\nHost: maas\r\nConnection: close, Content-Length\r\nContent-Length: 5\r\n\r\nhello'),
    ('req-te-x', b'POST /echo/req-te-x HTTP/1.1\r\nHost: maas\r\nTransfer-Encoding: x, chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n'),
    ('req-te-identity', b'POST /echo/req-te-identity HTTP/1.1\r\nHost: maas\r\nTransfer-Encoding: identity, chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n'),
    ('gzipchunked', b'GET /resp/gzipchunked HTTP/1.1\r\nHost: maas\r\nConnection: close\r\n\r\n'),
    ('gzipclose', b'GET /resp/gzipclose HTTP/1.1\r\nHost: maas\r\nConnection: close\r\n\r\n'),
    ('badchunk', b'GET /resp/badchunk HTTP/1.1\r\nHost: maas\r\nConnection: close\r\n\r\n'),
    ('cutshort', b'GET /resp/cutshort HTTP/1.1\r\nHost: maas\r\nConnection: close\r\n\r\n'),
    ('badchunk-later', b'GET /resp/badchunk-later HTTP/1.1\r\nHost: maas\r\nConnection: close\r\n\r\n'),
    ('bigheader', b'GET /echo/bigheader HTTP/1.1\r\nHost: maas\r\nX-Big: ' + b'a' * 20000 + b'\r\nConnection: close\r\n\r\n'),
    ('hugeheader', b'GET /echo/hugeheader HTTP/1.1\r\nHost: maas\r\nX-Big: ' + b'a' * 420000 + b'\r\nConnection: close\r\n\r\n'),
    ('biguri', b'GET /echo/biguri?' + b'a' * 20000 + b' HTTP/1.1\r\nHost: maas\r\nConnection: close\r\n\r\n'),
    ('connect', b'CONNECT maas:443 HTTP/1.1\r\nHost: maas:443\r\n\r\n'),
]

def stalled_tunnel(port, limit=45):
    """A websocket tunnel whose region never reads: the client sends until everything is
    full, then leaves. How long until the proxy lets go of the region's side?"""
    del deaf[:]
    c = socket.create_connection(('127.0.0.1', port))
    c.sendall(b'GET /ws HTTP/1.1\r\nHost: maas\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n'
              b'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
    c.settimeout(5)
    if not c.recv(4096).startswith(b'HTTP/1.1 101'):
        return 'no 101'
    c.setblocking(False)
    last = time.time()
    while time.time() - last < 0.2:
        try:
            c.send(b'\0' * 65536)
            last = time.time()
        except BlockingIOError:
            time.sleep(0.01)
    c.close()
    t = time.time()
    p = select.poll()
    p.register(deaf[0], select.POLLRDHUP | select.POLLHUP | select.POLLERR)
    while time.time() - t < limit:
        if p.poll(20):
            return 'closed %.1f s after the client left' % (time.time() - t)
    return 'still open %d s after the client left' % limit

def first_line(b):
    return b.split(b'\r\n', 1)[0].decode('latin1')[:60]

def summary(name, out):
    if name in ('xff', 'host2', 'host2same', 'absuri', 'absuri-same', 'conn-names', 'conn-host', 'conn-cl', 'req-te-x', 'req-te-identity', 'bigheader', 'biguri'):
        s = seen.get(name)
        if not s:
            return 'server saw nothing'
        head = s[-1].split(b'\r\n\r\n', 1)
        lines = [l.decode('latin1') for l in head[0].split(b'\r\n')[1:]]
        interesting = [l for l in lines if re.match(r'(?i)(host|x-forwarded-for|a|b|c|d|x-secret|content-length|transfer-encoding):', l)]
        body = head[1] if len(head) > 1 else b''
        return 'server saw: %s | body %r' % ('; '.join(interesting), body[:40])
    return ''

def run(label, port):
    rows = []
    for name, data in CASES:
        seen.pop(name, None)
        out = req(port, data)
        time.sleep(0.05)
        rows.append((name, first_line(out) or '(nothing, %d bytes)' % len(out), len(out), summary(name, out)))
    return rows

def main():
    threading.Thread(target=backend, daemon=True).start()
    d = tempfile.mkdtemp()
    hcfg = os.path.join(d, 'haproxy.cfg')
    open(hcfg, 'w').write('''global
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout tunnel 500ms
frontend fe
    bind 127.0.0.1:18080
    option forwardfor
    default_backend be
backend be
    server s1 127.0.0.1:%d
''' % BACKEND)
    mcfg = os.path.join(d, 'maas-vip.toml')
    open(mcfg, 'w').write('''[[frontend]]
name = "fe"
bind = ["127.0.0.1:18081"]
mode = "http"
timeout_tunnel = "500ms"
[[frontend.server]]
name = "s1"
address = "127.0.0.1:%d"
check = false
[admin]
enabled = false
''' % BACKEND)
    hap = subprocess.Popen(['/usr/sbin/haproxy', '-db', '-f', hcfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), '..', 'target', 'debug', 'maas-vip')
    mv = subprocess.Popen([binary, 'run', '-c', mcfg], stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, 'mv.log'), 'w'), env=dict(os.environ, RUST_LOG='info'))
    deadline = time.time() + 15
    for port in (18080, 18081):
        while True:
            try:
                socket.create_connection(('127.0.0.1', port)).close()
                break
            except OSError:
                if time.time() > deadline:
                    sys.exit('a proxy did not start on port %d' % port)
                time.sleep(0.05)
    try:
        a = run('haproxy', 18080)
        b = run('maas-vip', 18081)
        ta = stalled_tunnel(18080)
        tb = stalled_tunnel(18081)
    finally:
        hap.kill(); mv.kill()
    for (n, l1, n1, s1), (_, l2, n2, s2) in zip(a, b):
        print('== %s\n   HAProxy 2.6: %s (%d bytes) %s\n   maas-vip:    %s (%d bytes) %s' % (n, l1, n1, s1, l2, n2, s2))
    print('== stalled websocket tunnel (timeout tunnel 500ms, client and server 30s)\n'
          '   HAProxy 2.6: %s\n   maas-vip:    %s' % (ta, tb))
    print('\nmaas-vip access log:')
    for line in open(os.path.join(d, 'mv.log')):
        if 'access' in line:
            print('  ' + re.sub(r'\x1b\[[0-9;]*m', '', line.strip())[:260])
main()
