// shmoff: shared anonymous memory that the parent maps only from an offset on.
// usage: shmoff DIR
// The parent maps three shared anonymous pages ('A', 'B', 'C') and forks; the parent unmaps
// page 0 (its mapping starts at offset 4096 of the object), the child page 2: no process maps
// the whole object. The child copies, every 2 ms, byte 0 (of page 0, which only it maps) to
// byte 4098 and byte 4097 to byte 4099. The parent creates DIR/ready; on each SIGUSR1 it
// writes a new byte at 4097, waits, and appends to DIR/report "ok" when the child copied it
// and page 0's 'A', with page 2 (only the parent's) intact.
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "report.h"


static void nap(long ms) {
	struct timespec ts = {0, ms * 1000 * 1000};
	nanosleep(&ts, NULL);
}

static volatile char *obj; // obj[i] for i >= 4096 only, in the parent
static char x = 'a';

// check writes a new byte at 4097 and waits for the child to copy it.
static void check(void) {
	obj[4097] = ++x;
	nap(30);
	if (obj[4099] != x)
		badv("byte the child copied", obj[4099], x);
	if (obj[4098] != 'A')
		badv("page 0, copied by the child", obj[4098], 'A');
	if (obj[4096] != 'B' || obj[8191] != 'B')
		badv("page 1", obj[4096], 'B');
	if (obj[8192] != 'C' || obj[12287] != 'C')
		badv("page 2", obj[8192], 'C');
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	volatile char *m = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return 3;
	memset((char *)m, 'A', 4096);
	memset((char *)m + 4096, 'B', 4096);
	memset((char *)m + 8192, 'C', 4096);
	if (fork() == 0) {
		munmap((char *)m + 8192, 4096);
		for (;;) {
			m[4098] = m[0];
			m[4099] = m[4097];
			nap(2);
		}
	}
	munmap((void *)m, 4096);
	obj = m;
	nap(10);
	report_loop(report_open(argv[1]), argv[1], check);
}
