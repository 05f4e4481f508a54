// incr: memory that keeps changing, and can check itself.
// usage: incr DIR
// 4096 pages, each stamped with its number and its version; versions live in a separate
// array. Every 200 us one random page gets a new version (written whole), and one time in 16
// a page is dropped instead (MADV_DONTNEED, version 0: it must read as zeros). It creates
// DIR/ready once every page was written; on SIGUSR1 it checks every page against its version
// and appends "ok OPS" or "bad page I ..." to DIR/report, then goes on.
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define NPAGES 4096
#define PAGE 4096

static volatile sig_atomic_t usr1;
static void on_usr1(int sig) { usr1 = 1; }

static uint32_t *data;
static uint32_t *ver;

static void stamp(int i) {
	uint32_t v = (uint32_t)i << 16 | (ver[i] & 0xffff);
	uint32_t *p = data + (size_t)i * PAGE / 4;
	for (int k = 0; k < PAGE / 4; k++)
		p[k] = v;
}

static int check(int i) {
	uint32_t want = ver[i] ? ((uint32_t)i << 16 | (ver[i] & 0xffff)) : 0;
	uint32_t *p = data + (size_t)i * PAGE / 4;
	for (int k = 0; k < PAGE / 4; k++)
		if (p[k] != want)
			return 0;
	return 1;
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	data = mmap(NULL, (size_t)NPAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ver = mmap(NULL, NPAGES * sizeof *ver, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	for (int i = 0; i < NPAGES; i++) {
		ver[i] = 1;
		stamp(i);
	}
	struct sigaction act = {0};
	act.sa_handler = on_usr1;
	sigaction(SIGUSR1, &act, NULL);
	char path[512];
	snprintf(path, sizeof path, "%s/ready", argv[1]);
	close(open(path, O_WRONLY | O_CREAT, 0644));
	snprintf(path, sizeof path, "%s/report", argv[1]);
	uint64_t ops = 0, x = 88172645463325252ull;
	for (;;) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		int i = x % NPAGES;
		if (x >> 60 == 0) {
			madvise(data + (size_t)i * PAGE / 4, PAGE, MADV_DONTNEED);
			ver[i] = 0;
		} else {
			ver[i]++;
			if ((ver[i] & 0xffff) == 0)
				ver[i]++;
			stamp(i);
		}
		ops++;
		if (usr1) {
			usr1 = 0;
			char line[128];
			int n = snprintf(line, sizeof line, "ok %llu\n", (unsigned long long)ops);
			for (int j = 0; j < NPAGES; j++)
				if (!check(j)) {
					n = snprintf(line, sizeof line, "bad page %d version %u first word %#x\n", j, ver[j], data[(size_t)j * PAGE / 4]);
					break;
				}
			int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
			write(fd, line, n);
			close(fd);
		}
		struct timespec ts = {0, 200 * 1000};
		nanosleep(&ts, NULL);
	}
}
