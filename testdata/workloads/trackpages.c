// trackpages: writes the pages it is told to, and checks its memory when asked.
// usage: trackpages DIR
// A buffer of 1024 pages (its address in DIR/addr, as hex), the first half stamped at start,
// the second half never touched (zeros); the version of each page is kept in another
// mapping. It sleeps in a loop; at SIGUSR2 it reads DIR/cmd:
//   "write G P1 P2 ..."  stamps pages P1, P2... with version G (each word: page<<16 | G)
//   "map"                maps 16 pages more (its address space changes)
// and then creates DIR/done-G (G of the command; "map" creates DIR/done-map). At SIGUSR1 it
// checks every page against its version (version 0: zeros) and appends "ok GEN" (GEN: the
// last version written) or "bad page I ..." to DIR/report.
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

#define NPAGES 1024
#define PAGE 4096

static volatile sig_atomic_t usr1, usr2;
static void on_usr1(int sig) { usr1 = 1; }
static void on_usr2(int sig) { usr2 = 1; }

static uint32_t *data;
struct state {
	uint32_t gen;
	uint32_t ver[NPAGES];
};
static struct state *st;

static void stamp(int i, uint32_t g) {
	uint32_t *p = data + (size_t)i * PAGE / 4;
	for (int k = 0; k < PAGE / 4; k++)
		p[k] = (uint32_t)i << 16 | g;
	st->ver[i] = g;
}

static int check(int i) {
	uint32_t want = st->ver[i] ? ((uint32_t)i << 16 | st->ver[i]) : 0;
	uint32_t *p = data + (size_t)i * PAGE / 4;
	for (int k = 0; k < PAGE / 4; k++)
		if (p[k] != want)
			return 0;
	return 1;
}

static void touch(const char *dir, const char *name) {
	char path[600];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	close(open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
}

static void command(const char *dir) {
	char path[600], buf[65536];
	snprintf(path, sizeof path, "%s/cmd", dir);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = 0;
	if (strncmp(buf, "map", 3) == 0) {
		void *m = mmap(NULL, 16 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (m != MAP_FAILED)
			memset(m, 1, 16 * PAGE);
		touch(dir, "done-map");
		return;
	}
	char *save, *tok = strtok_r(buf, " \n", &save);
	if (!tok || strcmp(tok, "write"))
		return;
	tok = strtok_r(NULL, " \n", &save);
	if (!tok)
		return;
	uint32_t g = strtoul(tok, NULL, 10) & 0xffff;
	while ((tok = strtok_r(NULL, " \n", &save))) {
		int i = atoi(tok);
		if (i >= 0 && i < NPAGES)
			stamp(i, g);
	}
	st->gen = g;
	char name[32];
	snprintf(name, sizeof name, "done-%u", g);
	touch(dir, name);
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	const char *dir = argv[1];
	// A guard page between the two mappings keeps them from merging into one.
	char *area = mmap(NULL, (NPAGES + 1) * PAGE + sizeof *st, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (area == MAP_FAILED)
		return 1;
	mprotect(area + NPAGES * PAGE, PAGE, PROT_NONE);
	data = (uint32_t *)area;
	st = (struct state *)(area + (NPAGES + 1) * PAGE);
	for (int i = 0; i < NPAGES / 2; i++)
		stamp(i, 1);
	st->gen = 1;
	struct sigaction act = {0};
	act.sa_handler = on_usr1;
	sigaction(SIGUSR1, &act, NULL);
	act.sa_handler = on_usr2;
	sigaction(SIGUSR2, &act, NULL);
	char path[600];
	snprintf(path, sizeof path, "%s/addr", dir);
	FILE *f = fopen(path, "w");
	fprintf(f, "%lx\n", (unsigned long)data);
	fclose(f);
	snprintf(path, sizeof path, "%s/report", dir);
	int rfd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	touch(dir, "ready");
	for (;;) {
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
		if (usr2) {
			usr2 = 0;
			command(dir);
		}
		if (usr1) {
			usr1 = 0;
			char line[128];
			int n = snprintf(line, sizeof line, "ok %u\n", st->gen);
			for (int j = 0; j < NPAGES; j++)
				if (!check(j)) {
					n = snprintf(line, sizeof line, "bad page %d version %u first word %#x\n", j, st->ver[j], data[(size_t)j * PAGE / 4]);
					break;
				}
			write(rfd, line, n);
		}
	}
}
