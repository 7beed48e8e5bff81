// The io_uring floor of an L4 proxy on this machine, beside minproxy.c's epoll floor: what a
// proxy costs when it does nothing but move bytes, with io_uring's batching. benches/compare.sh
// runs it beside HAProxy and maas-vip. Not a product: no timeouts, no health checks, no retries,
// no logs, no limits.
//
//   cc -O2 -o uringproxy benches/floor/uringproxy.c -luring   # liburing-dev
//   uringproxy PORT SERVER_PORT...
//
// Listens on 127.0.0.1:PORT and sends each connection to the next 127.0.0.1:SERVER_PORT in turn,
// like minproxy. One thread, one ring: a multishot accept on the listener, a multishot recv on
// each socket into a provided buffer ring (the kernel picks the buffer; a buffer goes back to the
// ring once its bytes are sent to the peer), one send per received buffer, queued in order per
// direction, and one io_uring_submit_and_wait per turn of the loop. connect(2) is blocking, as in
// minproxy: on loopback the handshake completes inside the call. A FIN read from one side is
// passed on with shutdown(SHUT_WR) once what came before it is sent; both sockets close once
// both sides are done, or at once (pending operations cancelled) on an error.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define NBUF 4096   // provided buffers (a power of two)
#define BUFSZ 16384 // bytes each
#define BGID 0

enum { OP_RECV = 1, OP_SEND = 2, OP_OTHER = 3 }; // low bits of user_data; 0 is the accept

struct conn;
struct end {
  struct conn *conn;
  int fd;
  int eof;        // FIN (or an error) read from this socket
  int shut;       // the FIN was passed on to the peer
  int sending;    // a send of this end's queue to the peer is in flight
  int head, tail; // queue of buffer ids read here, to be written to the peer (-1: empty)
  uint32_t off;   // bytes of the head buffer already sent
};
struct conn {
  struct end e[2]; // e[0] the client, e[1] the server
  int refs;        // operations in flight that name this connection
  int dead;
};

static struct io_uring ring;
static struct io_uring_buf_ring *br;
static char *bufs;
static uint32_t buflen[NBUF];
static int nextbuf[NBUF];

static struct io_uring_sqe *sqe_get(void) {
  struct io_uring_sqe *s = io_uring_get_sqe(&ring);
  while (s == NULL) {
    io_uring_submit(&ring);
    s = io_uring_get_sqe(&ring);
  }
  return s;
}

static void buf_return(int bid) {
  io_uring_buf_ring_add(br, bufs + (size_t)bid * BUFSZ, BUFSZ, (unsigned short)bid,
                        io_uring_buf_ring_mask(NBUF), 0);
  io_uring_buf_ring_advance(br, 1);
}

static void arm_recv(struct end *e) {
  struct io_uring_sqe *s = sqe_get();
  io_uring_prep_recv_multishot(s, e->fd, NULL, 0, 0);
  s->flags |= IOSQE_BUFFER_SELECT;
  s->buf_group = BGID;
  io_uring_sqe_set_data64(s, (uint64_t)(uintptr_t)e | OP_RECV);
  e->conn->refs++;
}

static void send_head(struct end *e) {
  struct end *peer = &e->conn->e[e == &e->conn->e[0]];
  struct io_uring_sqe *s = sqe_get();
  io_uring_prep_send(s, peer->fd, bufs + (size_t)e->head * BUFSZ + e->off,
                     buflen[e->head] - e->off, MSG_NOSIGNAL);
  io_uring_sqe_set_data64(s, (uint64_t)(uintptr_t)e | OP_SEND);
  e->sending = 1;
  e->conn->refs++;
}

static void conn_release(struct conn *c) {
  if (!c->dead || c->refs > 0) return;
  for (int i = 0; i < 2; i++) {
    for (int b = c->e[i].head; b >= 0; b = nextbuf[b]) buf_return(b);
    close(c->e[i].fd);
  }
  free(c);
}

static void conn_kill(struct conn *c) {
  if (c->dead) return;
  c->dead = 1;
  for (int i = 0; i < 2; i++) {
    struct io_uring_sqe *s = sqe_get();
    io_uring_prep_cancel_fd(s, c->e[i].fd, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(s, (uint64_t)(uintptr_t)&c->e[i] | OP_OTHER);
    c->refs++;
  }
}

// This end's queue is drained and its FIN was read: pass the FIN on; both done: close.
static void maybe_shut(struct end *e) {
  struct conn *c = e->conn;
  struct end *peer = &c->e[e == &c->e[0]];
  if (!e->eof || e->shut || e->head >= 0) return;
  e->shut = 1;
  shutdown(peer->fd, SHUT_WR);
  if (peer->shut) {
    c->dead = 1; // both recvs have ended (EOF ends a multishot recv) and no send is in flight
    conn_release(c);
  }
}

static void on_recv(struct end *e, int res, unsigned flags) {
  struct conn *c = e->conn;
  if (!(flags & IORING_CQE_F_MORE)) c->refs--;
  if (res > 0) {
    int bid = (int)(flags >> IORING_CQE_BUFFER_SHIFT);
    if (c->dead) {
      buf_return(bid);
    } else {
      buflen[bid] = (uint32_t)res;
      nextbuf[bid] = -1;
      if (e->tail >= 0) nextbuf[e->tail] = bid; else e->head = bid;
      e->tail = bid;
      if (!e->sending) send_head(e);
    }
  }
  if (c->dead) {
    conn_release(c);
  } else if (res == 0) {
    e->eof = 1;
    maybe_shut(e);
  } else if (res < 0 && res != -ENOBUFS) {
    conn_kill(c);
  } else if (!(flags & IORING_CQE_F_MORE)) {
    arm_recv(e); // ended by a full buffer ring (ENOBUFS) or by the kernel: again
  }
}

static void on_send(struct end *e, int res) {
  struct conn *c = e->conn;
  c->refs--;
  e->sending = 0;
  if (c->dead) {
    conn_release(c);
    return;
  }
  if (res < 0) {
    conn_kill(c);
    return;
  }
  e->off += (uint32_t)res;
  if (e->off >= buflen[e->head]) {
    int bid = e->head;
    e->head = nextbuf[bid];
    if (e->head < 0) e->tail = -1;
    e->off = 0;
    buf_return(bid);
  }
  if (e->head >= 0) send_head(e); else maybe_shut(e);
}

static void on_accept(int lfd, int c, unsigned flags, char **servers, int nservers, int *next) {
  static const int one = 1;
  if (!(flags & IORING_CQE_F_MORE)) {
    struct io_uring_sqe *s = sqe_get();
    io_uring_prep_multishot_accept(s, lfd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(s, 0);
  }
  if (c < 0) return;
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)atoi(servers[*next]))};
  *next = (*next + 1) % nservers;
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof sa) < 0) {
    close(c);
    if (s >= 0) close(s);
    return;
  }
  setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct conn *cn = calloc(1, sizeof *cn);
  if (cn == NULL) {
    close(c);
    close(s);
    return;
  }
  for (int i = 0; i < 2; i++) {
    cn->e[i].conn = cn;
    cn->e[i].fd = i == 0 ? c : s;
    cn->e[i].head = cn->e[i].tail = -1;
    arm_recv(&cn->e[i]);
  }
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: uringproxy PORT SERVER_PORT...\n");
    return 2;
  }
  int port = atoi(argv[1]);
  int nservers = argc - 2;
  char **servers = argv + 2;

  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  p.cq_entries = 65536;
  int r = io_uring_queue_init_params(4096, &ring, &p);
  if (r < 0) { // a kernel older than 6.1: without the task-run flags
    memset(&p, 0, sizeof p);
    p.flags = IORING_SETUP_CQSIZE;
    p.cq_entries = 65536;
    r = io_uring_queue_init_params(4096, &ring, &p);
  }
  if (r < 0) {
    fprintf(stderr, "uringproxy: io_uring_queue_init: %s\n", strerror(-r));
    return 1;
  }
  br = mmap(NULL, NBUF * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE,
            MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  bufs = malloc((size_t)NBUF * BUFSZ);
  if (br == MAP_FAILED || bufs == NULL) {
    perror("uringproxy: buffers");
    return 1;
  }
  struct io_uring_buf_reg reg = {.ring_addr = (uint64_t)(uintptr_t)br, .ring_entries = NBUF,
                                 .bgid = BGID};
  r = io_uring_register_buf_ring(&ring, &reg, 0);
  if (r < 0) {
    fprintf(stderr, "uringproxy: io_uring_register_buf_ring: %s\n", strerror(-r));
    return 1;
  }
  io_uring_buf_ring_init(br);
  for (int b = 0; b < NBUF; b++) buf_return(b);

  int one = 1;
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in la = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &la.sin_addr);
  if (bind(lfd, (struct sockaddr *)&la, sizeof la) < 0 || listen(lfd, 4096) < 0) {
    perror("uringproxy: listen");
    return 1;
  }
  int next = 0;
  on_accept(lfd, -1, 0, servers, nservers, &next); // arms the multishot accept

  for (;;) {
    r = io_uring_submit_and_wait(&ring, 1);
    if (r < 0 && r != -EINTR) {
      fprintf(stderr, "uringproxy: io_uring_submit_and_wait: %s\n", strerror(-r));
      return 1;
    }
    struct io_uring_cqe *cqe;
    unsigned head, seen = 0;
    io_uring_for_each_cqe(&ring, head, cqe) {
      uint64_t ud = cqe->user_data;
      struct end *e = (struct end *)(uintptr_t)(ud & ~(uint64_t)3);
      seen++;
      switch (ud & 3) {
        case 0: on_accept(lfd, cqe->res, cqe->flags, servers, nservers, &next); break;
        case OP_RECV: on_recv(e, cqe->res, cqe->flags); break;
        case OP_SEND: on_send(e, cqe->res); break;
        default:
          e->conn->refs--;
          conn_release(e->conn);
      }
    }
    io_uring_cq_advance(&ring, seen);
  }
}
