// ptypair: a pty pair owned by the tree, like a terminal emulator and its shell.
// usage: ptypair LOGFILE
// The parent opens a pty master; the child starts a session with the slave as its controlling
// terminal, turns echo off, and answers each line N, through /dev/tty, with "got N echo=E fg=F" (E: the ECHO
// flag, F: 1 when it is the terminal's foreground group). The parent sends N, waits for the
// answer (sending N again if none comes in 50 ms: lines in the terminal's queues are not kept
// across a checkpoint) and logs it to LOGFILE.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	int m = posix_openpt(O_RDWR | O_NOCTTY);
	if (m < 0 || grantpt(m) < 0 || unlockpt(m) < 0)
		return 3;
	char *name = ptsname(m);
	if (fork() == 0) {
		close(m);
		setsid();
		int s = open(name, O_RDWR); // becomes the controlling terminal
		dup2(s, 0), dup2(s, 1), dup2(s, 2);
		struct termios t;
		tcgetattr(0, &t);
		t.c_lflag &= ~ECHO;
		tcsetattr(0, TCSANOW, &t);
		// It answers through /dev/tty, as programs that talk to their terminal do.
		int tty = open("/dev/tty", O_WRONLY);
		if (tty < 0)
			return 6;
		char line[64];
		while (fgets(line, sizeof line, stdin)) {
			tcgetattr(0, &t);
			long n = atol(line);
			dprintf(tty, "got %ld echo=%d fg=%d\n", n, (t.c_lflag & ECHO) != 0, tcgetpgrp(0) == getpgrp());
		}
		return 4;
	}
	int log = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
	// Non-blocking: a dump between poll and read drops the answer poll saw (bytes queued in
	// a terminal are not kept), and a blocking read would then wait for it forever.
	fcntl(m, F_SETFL, fcntl(m, F_GETFL) | O_NONBLOCK);
	char buf[256];
	int have = 0;
	for (long n = 1;;) {
		char out[32];
		int k = snprintf(out, sizeof out, "%ld\n", n);
		write(m, out, k);
		struct pollfd p = {m, POLLIN, 0};
		while (poll(&p, 1, 50) > 0) {
			ssize_t r = read(m, buf + have, sizeof buf - 1 - have);
			if (r < 0 && errno == EAGAIN)
				break; // send N again
			if (r <= 0)
				return 5;
			have += r;
			buf[have] = 0;
			char *nl;
			int answered = 0;
			while ((nl = strchr(buf, '\n'))) {
				*nl = 0;
				long got;
				char rest[64];
				// Two answers to N (it was sent again while the child was slow) log once.
				if (sscanf(buf, "got %ld %63[^\r]", &got, rest) == 2 && got == n && !answered) {
					dprintf(log, "%ld %s\n", n, rest);
					answered = 1;
				}
				memmove(buf, nl + 1, strlen(nl + 1) + 1);
				have = strlen(buf);
			}
			if (answered) {
				n++;
				break;
			}
		}
		usleep(5000);
	}
}
