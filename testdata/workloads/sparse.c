// sparse: memory in thousands of separate runs, as a fragmented heap.
// usage: sparse DIR
// Maps 16384 pages and writes every other one with its own number, leaving the others
// untouched. It creates DIR/ready; on SIGUSR1 it checks every page (its number, or zeros)
// and appends "ok" or "bad page N" to DIR/report.
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#define NPAGES 16384
#define PAGE 4096

static volatile sig_atomic_t usr1;
static void on_usr1(int sig) { usr1 = 1; }

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	uint32_t *m = mmap(NULL, (size_t)NPAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	madvise(m, (size_t)NPAGES * PAGE, MADV_NOHUGEPAGE);
	for (int i = 0; i < NPAGES; i += 2)
		for (int k = 0; k < PAGE / 4; k++)
			m[(size_t)i * PAGE / 4 + k] = i + 1;
	struct sigaction act = {0};
	act.sa_handler = on_usr1;
	sigaction(SIGUSR1, &act, NULL);
	char path[512];
	snprintf(path, sizeof path, "%s/ready", argv[1]);
	close(open(path, O_WRONLY | O_CREAT, 0644));
	while (!usr1) // not pause: a signal taken between the test and pause() would be missed
		usleep(2000);
	char line[64];
	int n = snprintf(line, sizeof line, "ok\n");
	for (int i = 0; i < NPAGES; i++) {
		uint32_t want = i % 2 ? 0 : i + 1;
		if (m[(size_t)i * PAGE / 4] != want || m[(size_t)i * PAGE / 4 + PAGE / 4 - 1] != want) {
			n = snprintf(line, sizeof line, "bad page %d\n", i);
			break;
		}
	}
	snprintf(path, sizeof path, "%s/report", argv[1]);
	int r = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
	write(r, line, n);
	for (;;)
		pause();
}
