// The floor of an L4 proxy on this machine: what a proxy costs when it does nothing but move
// bytes. benches/compare.sh runs it beside HAProxy and maas-vip so that their figures can be read
// against the cheapest proxy there can be, not only against each other. Not a product: no
// timeouts, no health checks, no retries, no logs, no limits.
//
//   cc -O2 -o minproxy benches/floor/minproxy.c
//   minproxy PORT copy    SERVER_PORT...   # epoll + read(2)/write(2), one thread
//   minproxy PORT sockmap SERVER_PORT...   # payload moved in the kernel (see below)
//
// Listens on 127.0.0.1:PORT and sends each connection to the next 127.0.0.1:SERVER_PORT in
// turn.
//
// copy: one epoll loop; a readable socket is read once into a 64 KiB buffer and that is written
// to its peer. A short write waits for the peer with poll(2), stalling the loop: correct, and
// rare with the small messages this is measured with. connect(2) is blocking: on loopback the
// handshake completes inside the call.
//
// sockmap: both sockets of a connection go into a BPF sockhash keyed by socket cookie, with an
// sk_skb stream-verdict program that redirects each received skb to the egress of the peer (the
// program is 13 instructions, written out below; root or CAP_BPF + CAP_NET_ADMIN). User space only
// sees EOFs (and skbs the program could not redirect). The kernel sends redirected data from a
// workqueue (kworker), so a FIN read here can overtake data still queued there: this mode loses
// data at close and is only fit to measure keep-alive throughput.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_FD 65536

struct end {
  int peer;        // the other socket of the connection
  int eof;         // this side sent FIN (or failed)
  uint64_t cookie; // sockmap mode: this socket's cookie, its key in the sockhash
};

static struct end *ends[MAX_FD];
static int map_fd = -1;

static long bpf(int cmd, union bpf_attr *attr) {
  return syscall(SYS_bpf, cmd, attr, sizeof(*attr));
}

#define INSN(c, d, s, o, i) \
  ((struct bpf_insn){.code = (c), .dst_reg = (d), .src_reg = (s), .off = (o), .imm = (i)})

// sockhash (u64 cookie -> socket) and the verdict program:
//   key = bpf_get_socket_cookie(skb); return bpf_sk_redirect_hash(skb, map, &key, 0) ?: SK_PASS;
// A missing key leaves the skb to the socket's own receive queue (user space reads it).
static int sockmap_setup(void) {
  union bpf_attr a;
  memset(&a, 0, sizeof a);
  a.map_type = BPF_MAP_TYPE_SOCKHASH;
  a.key_size = 8;
  a.value_size = 4;
  a.max_entries = MAX_FD;
  map_fd = bpf(BPF_MAP_CREATE, &a);
  if (map_fd < 0) {
    perror("minproxy: BPF_MAP_CREATE");
    return -1;
  }
  struct bpf_insn prog[] = {
      INSN(BPF_ALU64 | BPF_MOV | BPF_X, 6, 1, 0, 0),                  // r6 = skb
      INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_get_socket_cookie),  // r0 = cookie
      INSN(BPF_STX | BPF_MEM | BPF_DW, 10, 0, -8, 0),                 // key on the stack
      INSN(BPF_LD | BPF_DW | BPF_IMM, 2, BPF_PSEUDO_MAP_FD, 0, map_fd), // r2 = map
      INSN(0, 0, 0, 0, 0),
      INSN(BPF_ALU64 | BPF_MOV | BPF_X, 1, 6, 0, 0),                  // r1 = skb
      INSN(BPF_ALU64 | BPF_MOV | BPF_X, 3, 10, 0, 0),                 // r3 = &key
      INSN(BPF_ALU64 | BPF_ADD | BPF_K, 3, 0, 0, -8),
      INSN(BPF_ALU64 | BPF_MOV | BPF_K, 4, 0, 0, 0),                  // flags: egress
      INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_sk_redirect_hash),
      INSN(BPF_JMP | BPF_JNE | BPF_K, 0, 0, 1, 0),                    // SK_DROP (no key)?
      INSN(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, 1),                  //   -> SK_PASS
      INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
  };
  static char log[65536];
  memset(&a, 0, sizeof a);
  a.prog_type = BPF_PROG_TYPE_SK_SKB;
  a.insns = (uint64_t)(uintptr_t)prog;
  a.insn_cnt = sizeof prog / sizeof prog[0];
  a.license = (uint64_t)(uintptr_t) "GPL";
  a.log_buf = (uint64_t)(uintptr_t)log;
  a.log_size = sizeof log;
  a.log_level = 1;
  int prog_fd = bpf(BPF_PROG_LOAD, &a);
  if (prog_fd < 0) {
    perror("minproxy: BPF_PROG_LOAD");
    fprintf(stderr, "%s\n", log);
    return -1;
  }
  memset(&a, 0, sizeof a);
  a.target_fd = map_fd;
  a.attach_bpf_fd = prog_fd;
  a.attach_type = BPF_SK_SKB_STREAM_VERDICT;
  if (bpf(BPF_PROG_ATTACH, &a) < 0) {
    perror("minproxy: BPF_PROG_ATTACH");
    return -1;
  }
  return 0;
}

static uint64_t cookie_of(int fd) {
  uint64_t c = 0;
  socklen_t len = sizeof c;
  if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &c, &len) < 0) return 0;
  return c;
}

static int map_put(uint64_t key, int fd) {
  union bpf_attr a;
  uint32_t value = (uint32_t)fd;
  memset(&a, 0, sizeof a);
  a.map_fd = map_fd;
  a.key = (uint64_t)(uintptr_t)&key;
  a.value = (uint64_t)(uintptr_t)&value;
  a.flags = BPF_ANY;
  return (int)bpf(BPF_MAP_UPDATE_ELEM, &a);
}

static void map_del(uint64_t key) {
  union bpf_attr a;
  memset(&a, 0, sizeof a);
  a.map_fd = map_fd;
  a.key = (uint64_t)(uintptr_t)&key;
  bpf(BPF_MAP_DELETE_ELEM, &a);
}

// Writes all of buf to fd, waiting with poll(2) when the socket is full.
static int write_all(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, buf, len);
    if (n > 0) {
      buf += n;
      len -= (size_t)n;
    } else if (n < 0 && errno == EAGAIN) {
      struct pollfd p = {.fd = fd, .events = POLLOUT};
      poll(&p, 1, -1);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      return -1;
    }
  }
  return 0;
}

static void close_both(int ep, int fd) {
  struct end *e = ends[fd];
  int peer = e->peer;
  if (map_fd >= 0) {
    map_del(e->cookie);
    map_del(ends[peer]->cookie);
  }
  epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
  epoll_ctl(ep, EPOLL_CTL_DEL, peer, NULL);
  close(fd);
  close(peer);
  free(ends[fd]);
  free(ends[peer]);
  ends[fd] = ends[peer] = NULL;
}

int main(int argc, char **argv) {
  if (argc < 4 || (strcmp(argv[2], "copy") != 0 && strcmp(argv[2], "sockmap") != 0)) {
    fprintf(stderr, "usage: minproxy PORT copy|sockmap SERVER_PORT...\n");
    return 2;
  }
  int port = atoi(argv[1]);
  int nservers = argc - 3;
  char **servers = argv + 3;
  if (strcmp(argv[2], "sockmap") == 0 && sockmap_setup() < 0) return 1;

  int one = 1;
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in la = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &la.sin_addr);
  if (bind(lfd, (struct sockaddr *)&la, sizeof la) < 0 || listen(lfd, 4096) < 0) {
    perror("minproxy: listen");
    return 1;
  }
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event lev = {.events = EPOLLIN, .data.fd = lfd};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);

  static char buf[65536];
  struct epoll_event evs[256];
  int next = 0;
  for (;;) {
    int n = epoll_wait(ep, evs, 256, -1);
    if (n < 0 && errno != EINTR) {
      perror("minproxy: epoll_wait");
      return 1;
    }
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == lfd) {
        int c;
        while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
          int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
          struct sockaddr_in sa = {.sin_family = AF_INET,
                                   .sin_port = htons((uint16_t)atoi(servers[next]))};
          next = (next + 1) % nservers;
          inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
          if (c >= MAX_FD || s < 0 || s >= MAX_FD ||
              connect(s, (struct sockaddr *)&sa, sizeof sa) < 0) {
            close(c);
            if (s >= 0) close(s);
            continue;
          }
          fcntl(s, F_SETFL, O_NONBLOCK);
          setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          ends[c] = calloc(1, sizeof(struct end));
          ends[s] = calloc(1, sizeof(struct end));
          ends[c]->peer = s;
          ends[s]->peer = c;
          if (map_fd >= 0) {
            ends[c]->cookie = cookie_of(c);
            ends[s]->cookie = cookie_of(s);
            if (map_put(ends[c]->cookie, s) < 0 || map_put(ends[s]->cookie, c) < 0)
              perror("minproxy: BPF_MAP_UPDATE_ELEM");
          }
          struct epoll_event ce = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = c};
          struct epoll_event se = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = s};
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
          epoll_ctl(ep, EPOLL_CTL_ADD, s, &se);
        }
        continue;
      }
      struct end *e = ends[fd];
      if (e == NULL || e->eof) continue;
      ssize_t r = read(fd, buf, sizeof buf);
      if (r > 0) {
        if (write_all(e->peer, buf, (size_t)r) < 0) close_both(ep, fd);
        continue;
      }
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      // EOF (or an error): pass the FIN on; close both once both sides are done.
      e->eof = 1;
      if (r < 0 || ends[e->peer]->eof) {
        close_both(ep, fd);
      } else {
        epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
        shutdown(e->peer, SHUT_WR);
      }
    }
  }
}
