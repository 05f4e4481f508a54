// cowfile: a private file mapping, one page of it written (a private copy), the others still
// the file's: what the file is written with shows through them, not through the copy.
// usage: cowfile DIR
// DIR/data holds three pages of 'a', 'b', 'c'; the process maps it MAP_PRIVATE writable,
// writes 'X' over page 0, reads pages 1 and 2. It creates DIR/ready; on each SIGUSR1 it writes
// a new letter into page 1 of the file (pwrite), and appends to DIR/report "ok" when page 1 of
// the mapping shows it, page 0 is still its own copy and page 2 still the file's, else "bad:"
// (see report.h).
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "report.h"

static int fd;
static char *m, letter = 'k';

// check writes a new letter into page 1 of the file and looks at the mapping.
static void check(void) {
	char page[4096];
	memset(page, ++letter, sizeof page);
	pwrite(fd, page, sizeof page, 4096);
	if (m[4096] != letter || m[4096 + 4095] != letter)
		badv("page 1 (the file's)", m[4096], letter);
	if (m[0] != 'X' || m[1] != 'a')
		badv("page 0 (the copy)", m[0], 'X');
	if (m[8192] != 'c')
		badv("page 2 (the file's)", m[8192], 'c');
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	char path[512], page[4096];
	snprintf(path, sizeof path, "%s/data", argv[1]);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	for (int i = 0; i < 3; i++) {
		memset(page, 'a' + i, sizeof page);
		write(fd, page, sizeof page);
	}
	m = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	if (m == MAP_FAILED)
		return 3;
	m[0] = 'X';
	volatile char sink = m[4096] + m[8192];
	(void)sink;
	report_loop(report_open(argv[1]), argv[1], check);
}
