// cowfile: a private file mapping, one page of it written (a private copy), the others still
// the file's: what the file is written with shows through them, not through the copy.
// usage: cowfile DIR
// DIR/data holds three pages of 'a', 'b', 'c'; the process maps it MAP_PRIVATE writable,
// writes 'X' over page 0, reads pages 1 and 2. It creates DIR/ready; on each SIGUSR1 it writes
// a new letter into page 1 of the file (pwrite), and appends to DIR/report "ok" when page 1 of
// the mapping shows it, page 0 is still its own copy and page 2 still the file's, else "bad:".
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t usr1;
static void on_usr1(int sig) { usr1++; }

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	char path[512], page[4096];
	snprintf(path, sizeof path, "%s/data", argv[1]);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	for (int i = 0; i < 3; i++) {
		memset(page, 'a' + i, sizeof page);
		write(fd, page, sizeof page);
	}
	char *m = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	if (m == MAP_FAILED)
		return 3;
	m[0] = 'X';
	volatile char sink = m[4096] + m[8192];
	(void)sink;
	struct sigaction act = {0};
	act.sa_handler = on_usr1;
	sigaction(SIGUSR1, &act, NULL);
	snprintf(path, sizeof path, "%s/report", argv[1]);
	int rfd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
	snprintf(path, sizeof path, "%s/ready", argv[1]);
	close(open(path, O_WRONLY | O_CREAT, 0644));
	char letter = 'k';
	for (int seen = 0;;) {
		while (usr1 == seen) {
			struct timespec ts = {0, 2 * 1000 * 1000};
			nanosleep(&ts, NULL);
		}
		seen = usr1;
		letter++;
		memset(page, letter, sizeof page);
		pwrite(fd, page, sizeof page, 4096);
		if (m[4096] == letter && m[4096 + 4095] == letter && m[0] == 'X' && m[1] == 'a' && m[8192] == 'c')
			dprintf(rfd, "ok\n");
		else
			dprintf(rfd, "bad: page 0 %c%c page 1 %c (want %c) page 2 %c\n", m[0], m[1], m[4096], letter, m[8192]);
	}
}
