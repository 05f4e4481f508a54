// scmrights: files in flight: sent with SCM_RIGHTS on unix sockets and not received yet,
// held by no fd of the process any more.
// usage: scmrights DIR [stream]
// The read end of a pipe holding "piped" goes with "take this" on a datagram socketpair, and
// DIR/file (offset 3) with "and this" on a seqpacket pair; the process then closes its own
// fds of both. On each SIGUSR1 it receives both, checks the message, the pipe's bytes and the
// file's offset and content, sends them again as they were, and reports (see report.h). With
// "stream", an eventfd is in flight on a stream pair too, which gocr refuses: the kernel does
// not show where in the byte stream it was sent.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "report.h"

static int dg[2], sq[2], pw;

static int send_fd(int s, const char *msg, int fd) {
	char c[CMSG_SPACE(sizeof(int))] = {0};
	struct iovec iov = {(void *)msg, strlen(msg)};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = c, .msg_controllen = sizeof c};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET, cm->cmsg_type = SCM_RIGHTS, cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof fd);
	return sendmsg(s, &mh, 0) == (ssize_t)strlen(msg) ? 0 : -1;
}

static int recv_fd(int s, char *msg, size_t n) {
	char c[CMSG_SPACE(sizeof(int))] = {0};
	struct iovec iov = {msg, n - 1};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = c, .msg_controllen = sizeof c};
	ssize_t k = recvmsg(s, &mh, MSG_DONTWAIT);
	if (k < 0)
		return -1;
	msg[k] = 0;
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	if (!cm || cm->cmsg_type != SCM_RIGHTS)
		return -1;
	int fd;
	memcpy(&fd, CMSG_DATA(cm), sizeof fd);
	return fd;
}

static void check(void) {
	char m[64], b[16] = {0};
	int r = recv_fd(dg[1], m, sizeof m);
	if (r < 0 || strcmp(m, "take this"))
		bad("the datagram with the pipe");
	else if (read(r, b, 5) != 5 || strcmp(b, "piped"))
		bad("the pipe's bytes");
	int f = recv_fd(sq[1], m, sizeof m);
	if (f < 0 || strcmp(m, "and this"))
		bad("the seqpacket message with the file");
	else if (lseek(f, 0, SEEK_CUR) != 3 || pread(f, b, 4, 0) != 4 || memcmp(b, "file", 4))
		badv("the file's offset", lseek(f, 0, SEEK_CUR), 3);
	// Put everything back as it was.
	if (r >= 0) {
		write(pw, "piped", 5);
		send_fd(dg[0], "take this", r);
		close(r);
	}
	if (f >= 0) {
		send_fd(sq[0], "and this", f);
		close(f);
	}
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	int p[2];
	char path[600];
	snprintf(path, sizeof path, "%s/file", argv[1]);
	int f = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (f < 0 || write(f, "file content", 12) != 12 || lseek(f, 3, SEEK_SET) != 3 || pipe(p) ||
	    socketpair(AF_UNIX, SOCK_DGRAM, 0, dg) || socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sq))
		return 3;
	pw = p[1];
	write(pw, "piped", 5);
	if (send_fd(dg[0], "take this", p[0]) || send_fd(sq[0], "and this", f))
		return 4;
	close(p[0]);
	close(f);
	if (argc > 2 && !strcmp(argv[2], "stream")) {
		int st[2], e = eventfd(0, 0);
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, st) || send(st[0], "head", 4, 0) != 4 || send_fd(st[0], "with", e))
			return 5;
		close(e);
	}
	report_loop(report_open(argv[1]), argv[1], check);
}
