// sockopts: TCP, UDP and IPv6 sockets with the options servers set, checked by the process.
// usage: sockopts DIR
// It makes a TCP listener, a connection to it (both ends), a UDP socket connected to another,
// shut down for writing and with a classic BPF filter, and an IPv6 listener (when ::1 is
// there), sets options on each, reads them back, and creates DIR/ready. On each SIGUSR1 it
// reads every option again, checks the connection still carries bytes and the UDP socket
// still refuses to send, and appends to DIR/report "ok", or "bad:" and what differs.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "report.h"


struct intopt {
	const char *name;
	int *fd, level, opt, val;
	int want; // read back after setting
};

static int l, c, s, u, u2, l6 = -1;

#define O(fd, level, opt, val) {#fd ":" #opt, &fd, level, opt, val, 0}
static struct intopt opts[] = {
	O(l, SOL_SOCKET, SO_REUSEADDR, 1),
	O(l, SOL_SOCKET, SO_REUSEPORT, 1),
	O(l, SOL_SOCKET, SO_KEEPALIVE, 1),
	O(l, SOL_SOCKET, SO_PRIORITY, 3),
	O(l, SOL_SOCKET, SO_RCVBUF, 65536),
	O(l, SOL_SOCKET, SO_SNDBUF, 131072),
	O(l, SOL_SOCKET, SO_RCVLOWAT, 16),
	O(l, SOL_SOCKET, SO_MARK, 42),
	O(l, IPPROTO_TCP, TCP_KEEPIDLE, 77),
	O(l, IPPROTO_TCP, TCP_KEEPINTVL, 13),
	O(l, IPPROTO_TCP, TCP_KEEPCNT, 4),
	O(l, IPPROTO_TCP, TCP_NODELAY, 1),
	O(l, IPPROTO_TCP, TCP_USER_TIMEOUT, 4321),
	O(l, IPPROTO_TCP, TCP_DEFER_ACCEPT, 5),
	O(l, IPPROTO_TCP, TCP_FASTOPEN, 7),
	O(l, IPPROTO_IP, IP_TOS, 0x10),
	O(l, IPPROTO_IP, IP_TTL, 33),
	O(l, IPPROTO_IP, IP_FREEBIND, 1),
	O(c, SOL_SOCKET, SO_REUSEADDR, 1),
	O(c, SOL_SOCKET, SO_REUSEPORT, 1),
	O(c, SOL_SOCKET, SO_KEEPALIVE, 1),
	O(c, SOL_SOCKET, SO_SNDBUF, 98304),
	O(c, IPPROTO_TCP, TCP_KEEPIDLE, 30),
	O(c, IPPROTO_TCP, TCP_KEEPINTVL, 5),
	O(c, IPPROTO_TCP, TCP_KEEPCNT, 3),
	O(c, IPPROTO_TCP, TCP_NODELAY, 1),
	O(c, IPPROTO_TCP, TCP_USER_TIMEOUT, 9000),
	O(c, IPPROTO_IP, IP_TOS, 0x08),
	O(c, IPPROTO_IP, IP_TTL, 17),
	O(s, IPPROTO_TCP, TCP_CORK, 1),
	O(s, IPPROTO_TCP, TCP_NOTSENT_LOWAT, 8192),
	O(s, SOL_SOCKET, SO_OOBINLINE, 1),
	O(u, SOL_SOCKET, SO_BROADCAST, 1),
	O(u, SOL_SOCKET, SO_RCVBUF, 20000),
	O(u, SOL_SOCKET, SO_TIMESTAMP, 1),
	O(u, IPPROTO_IP, IP_PKTINFO, 1),
	O(u, IPPROTO_IP, IP_RECVTOS, 1),
	O(u, IPPROTO_IP, IP_RECVTTL, 1),
	O(u, IPPROTO_IP, IP_MULTICAST_LOOP, 0),
	O(u, IPPROTO_IP, IP_MULTICAST_TTL, 5),
	O(u, IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO),
	O(u, SOL_SOCKET, SO_LOCK_FILTER, 1),
};
static struct intopt opts6[] = {
	O(l6, IPPROTO_IPV6, IPV6_V6ONLY, 1),
	O(l6, IPPROTO_IPV6, IPV6_TCLASS, 0x20),
	O(l6, IPPROTO_IPV6, IPV6_UNICAST_HOPS, 12),
	O(l6, IPPROTO_IPV6, IPV6_RECVPKTINFO, 1),
	O(l6, SOL_SOCKET, SO_REUSEADDR, 1),
};
#define N(a) (sizeof a / sizeof a[0])

static struct sock_filter filter[] = {
	BPF_STMT(BPF_LD | BPF_W | BPF_LEN, 0),
	BPF_JUMP(BPF_JMP | BPF_JGT | BPF_K, 1000, 0, 1),
	BPF_STMT(BPF_RET | BPF_K, 0),
	BPF_STMT(BPF_RET | BPF_K, 0xffff),
};

static int geti(int fd, int level, int opt) {
	int v = -12345;
	socklen_t n = sizeof v;
	if (getsockopt(fd, level, opt, &v, &n) < 0)
		return -errno - 100000;
	return v;
}


static void check(void) {
	for (size_t i = 0; i < N(opts); i++)
		if (geti(*opts[i].fd, opts[i].level, opts[i].opt) != opts[i].want)
			badv(opts[i].name, geti(*opts[i].fd, opts[i].level, opts[i].opt), opts[i].want);
	for (size_t i = 0; l6 >= 0 && i < N(opts6); i++)
		if (geti(*opts6[i].fd, opts6[i].level, opts6[i].opt) != opts6[i].want)
			badv(opts6[i].name, geti(*opts6[i].fd, opts6[i].level, opts6[i].opt), opts6[i].want);
	struct linger lg;
	socklen_t n = sizeof lg;
	getsockopt(l, SOL_SOCKET, SO_LINGER, &lg, &n);
	if (!lg.l_onoff || lg.l_linger != 7)
		badv("l:SO_LINGER", lg.l_onoff * 1000 + lg.l_linger, 1007);
	n = sizeof lg;
	getsockopt(c, SOL_SOCKET, SO_LINGER, &lg, &n);
	if (!lg.l_onoff || lg.l_linger != 0)
		badv("c:SO_LINGER", lg.l_onoff * 1000 + lg.l_linger, 1000);
	struct timeval tv;
	n = sizeof tv;
	getsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, &n);
	if (tv.tv_sec != 2 || tv.tv_usec != 500000)
		badv("s:SO_RCVTIMEO(us)", tv.tv_sec * 1000000L + tv.tv_usec, 2500000);
	n = sizeof tv;
	getsockopt(u, SOL_SOCKET, SO_SNDTIMEO, &tv, &n);
	if (tv.tv_sec != 0 || tv.tv_usec != 500000)
		badv("u:SO_SNDTIMEO(us)", tv.tv_sec * 1000000L + tv.tv_usec, 500000);
	char dev[32] = {0};
	n = sizeof dev;
	if (getsockopt(l, SOL_SOCKET, SO_BINDTODEVICE, dev, &n) < 0 || strcmp(dev, "lo"))
		badv("l:SO_BINDTODEVICE(is lo)", 0, 1);
	struct sock_filter got[16];
	n = N(got);
	if (getsockopt(u, SOL_SOCKET, SO_GET_FILTER, got, &n) < 0 || n != N(filter) || memcmp(got, filter, sizeof filter))
		badv("u:SO_GET_FILTER(instructions)", n, N(filter));
	// The UDP socket was shut down for writing: sending fails with EPIPE.
	errno = 0;
	if (send(u, "x", 1, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0 || errno != EPIPE)
		badv("u:send after SHUT_WR(errno)", errno, EPIPE);
	// The connection carries bytes both ways (s is corked: 1 byte waits for uncorking).
	char b[8];
	if (send(c, "ping", 4, 0) != 4 || recv(s, b, 4, MSG_WAITALL) != 4 || memcmp(b, "ping", 4))
		badv("c->s ping", 0, 1);
	if (send(s, "p", 1, 0) != 1 || setsockopt(s, IPPROTO_TCP, TCP_CORK, &(int){0}, sizeof(int)) < 0 ||
	    recv(c, b, 1, 0) != 1 || setsockopt(s, IPPROTO_TCP, TCP_CORK, &(int){1}, sizeof(int)) < 0)
		badv("s->c pong", 0, 1);
}

static int set(struct intopt *o) {
	if (setsockopt(*o->fd, o->level, o->opt, &o->val, sizeof o->val) < 0) {
		fprintf(stderr, "setsockopt %s: %s\n", o->name, strerror(errno));
		return -1;
	}
	return 0;
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	l = socket(AF_INET, SOCK_STREAM, 0);
	c = socket(AF_INET, SOCK_STREAM, 0);
	u = socket(AF_INET, SOCK_DGRAM, 0);
	u2 = socket(AF_INET, SOCK_DGRAM, 0);
	s = -1;
	for (size_t i = 0; i < N(opts); i++)
		if (*opts[i].fd == l && set(&opts[i]) < 0)
			return 3;
	setsockopt(l, SOL_SOCKET, SO_LINGER, &(struct linger){1, 7}, sizeof(struct linger));
	setsockopt(l, SOL_SOCKET, SO_BINDTODEVICE, "lo", 3);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof sa;
	if (bind(l, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(l, 8) < 0 || getsockname(l, (struct sockaddr *)&sa, &len) < 0)
		return 4;
	for (size_t i = 0; i < N(opts); i++)
		if (*opts[i].fd == c && set(&opts[i]) < 0)
			return 5;
	setsockopt(c, SOL_SOCKET, SO_LINGER, &(struct linger){1, 0}, sizeof(struct linger));
	// The listener defers accepting until the first bytes come.
	char hi[2];
	if (connect(c, (struct sockaddr *)&sa, sizeof sa) < 0 || send(c, "hi", 2, 0) != 2 || (s = accept(l, NULL, NULL)) < 0 ||
	    recv(s, hi, 2, MSG_WAITALL) != 2)
		return 6;
	for (size_t i = 0; i < N(opts); i++)
		if (*opts[i].fd == s && set(&opts[i]) < 0)
			return 7;
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &(struct timeval){2, 500000}, sizeof(struct timeval));
	struct sockaddr_in ua = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	len = sizeof ua;
	if (bind(u2, (struct sockaddr *)&ua, sizeof ua) < 0 || getsockname(u2, (struct sockaddr *)&ua, &len) < 0 ||
	    connect(u, (struct sockaddr *)&ua, sizeof ua) < 0)
		return 8;
	struct sock_fprog prog = {N(filter), filter};
	if (setsockopt(u, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) < 0)
		return 9;
	for (size_t i = 0; i < N(opts); i++)
		if (*opts[i].fd == u && set(&opts[i]) < 0)
			return 10;
	setsockopt(u, SOL_SOCKET, SO_SNDTIMEO, &(struct timeval){0, 500000}, sizeof(struct timeval));
	shutdown(u, SHUT_WR);
	l6 = socket(AF_INET6, SOCK_STREAM, 0);
	struct sockaddr_in6 sa6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
	for (size_t i = 0; i < N(opts6); i++)
		set(&opts6[i]);
	if (bind(l6, (struct sockaddr *)&sa6, sizeof sa6) < 0 || listen(l6, 4) < 0) {
		close(l6); // no IPv6 loopback here
		l6 = -1;
	}
	for (size_t i = 0; i < N(opts); i++)
		opts[i].want = geti(*opts[i].fd, opts[i].level, opts[i].opt);
	for (size_t i = 0; i < N(opts6); i++)
		opts6[i].want = l6 < 0 ? 0 : geti(*opts6[i].fd, opts6[i].level, opts6[i].opt);
	int rfd = report_open(argv[1]);
	report_loop(rfd, argv[1], check);
}
