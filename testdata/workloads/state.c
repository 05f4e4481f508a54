// state: holds state a restore must keep, and reports it on SIGUSR1.
// usage: state DIR
// It writes a pattern into a mapping at a fixed address, leaves bytes unread in a pipe and a
// FIFO, keeps a file open at a known offset, holds a deleted file, a shared file mapping and
// a mapping it only read (the zero page), blocks SIGUSR2 and has one pending. On SIGUSR1 its
// handler counts; the main loop then appends a report line to DIR/report:
//   usr1=N pending_usr2=0|1 pipe=<bytes> offset=<file offset> pattern=ok|bad fifo=<bytes>
//   deleted=<content> shared=<first bytes of the shared mapping> zero=ok|bad
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PATTERN_ADDR ((void *)0x10000000)
#define PATTERN_PAGES 64
#define ZERO_ADDR ((void *)0x20000000)
#define ZERO_PAGES 16

static volatile sig_atomic_t usr1;

static void on_usr1(int sig) { usr1++; }

static unsigned char pattern_byte(long i) { return (unsigned char)((i * 7 + 3) % 251); }

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	unsigned char *p = mmap(PATTERN_ADDR, PATTERN_PAGES * 4096, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (p != PATTERN_ADDR)
		return 3;
	for (long i = 0; i < PATTERN_PAGES * 4096; i++)
		p[i] = pattern_byte(i);

	int pfd[2];
	if (pipe(pfd) < 0)
		return 4;
	const char *msg = "hello pipe bytes";
	if (write(pfd[1], msg, strlen(msg)) != (ssize_t)strlen(msg))
		return 5;
	fcntl(pfd[0], F_SETFL, O_NONBLOCK);

	char path[512];
	snprintf(path, sizeof path, "%s/data", argv[1]);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	char zeros[20000] = {0};
	if (write(fd, zeros, sizeof zeros) != sizeof zeros)
		return 6;
	lseek(fd, 12345, SEEK_SET);

	// A mapping only read: its pages are the shared zero page, which is never dumped.
	volatile unsigned char *z = mmap(ZERO_ADDR, ZERO_PAGES * 4096, PROT_READ | PROT_WRITE,
					 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (z != ZERO_ADDR)
		return 7;
	long zsum = 0;
	for (long i = 0; i < ZERO_PAGES * 4096; i += 4096)
		zsum += z[i];

	snprintf(path, sizeof path, "%s/fifo", argv[1]);
	if (mkfifo(path, 0600) < 0)
		return 8;
	int ffd = open(path, O_RDWR | O_NONBLOCK);
	if (write(ffd, "fifo bytes", 10) != 10)
		return 9;

	snprintf(path, sizeof path, "%s/deleted", argv[1]);
	int dfd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (write(dfd, "gone but kept", 13) != 13)
		return 10;
	unlink(path);

	snprintf(path, sizeof path, "%s/shared", argv[1]);
	int sfd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (ftruncate(sfd, 4096) < 0)
		return 11;
	char *sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, sfd, 0);
	if (sh == MAP_FAILED)
		return 12;
	close(sfd);
	strcpy(sh, "shared before");

	struct sigaction sa = {0};
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR2);
	sigprocmask(SIG_BLOCK, &set, NULL);
	raise(SIGUSR2);

	snprintf(path, sizeof path, "%s/report", argv[1]);
	int rfd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
	snprintf(path, sizeof path, "%s/ready", argv[1]);
	close(open(path, O_WRONLY | O_CREAT, 0644));

	int reported = 0;
	for (;;) {
		if (usr1 != reported) {
			reported = usr1;
			sigset_t pend;
			sigpending(&pend);
			char got[64] = {0};
			ssize_t n = read(pfd[0], got, sizeof got - 1);
			if (n < 0)
				n = 0;
			got[n] = 0;
			int ok = 1;
			for (long i = 0; i < PATTERN_PAGES * 4096; i++)
				if (p[i] != pattern_byte(i))
					ok = 0;
			char fgot[64] = {0};
			n = read(ffd, fgot, sizeof fgot - 1);
			if (n < 0)
				n = 0;
			fgot[n] = 0;
			char dgot[64] = {0};
			n = pread(dfd, dgot, sizeof dgot - 1, 0);
			if (n < 0)
				n = 0;
			dgot[n] = 0;
			int zok = 1;
			for (long i = 0; i < ZERO_PAGES * 4096; i++)
				if (z[i] != 0)
					zok = 0;
			char line[512];
			int len = snprintf(line, sizeof line,
					   "usr1=%d pending_usr2=%d pipe=%s offset=%ld pattern=%s fifo=%s deleted=%s shared=%s zero=%s\n",
					   reported, sigismember(&pend, SIGUSR2), got, (long)lseek(fd, 0, SEEK_CUR),
					   ok ? "ok" : "bad", fgot, dgot, sh, zok && zsum == 0 ? "ok" : "bad");
			write(rfd, line, len);
		}
		struct timespec ts = {0, 2 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}
