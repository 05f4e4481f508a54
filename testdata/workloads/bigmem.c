// bigmem: fills MIB mebibytes with a pattern and checks every byte on SIGUSR1.
// usage: bigmem DIR MIB
// Writes DIR/ready when filled. On SIGUSR1 it checks all memory and appends "ok N" or
// "bad OFFSET" to DIR/report, N counting the checks done. On SIGUSR2 it rewrites one page in
// a hundred and appends "rewritten N".
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t usr1, usr2;
static void on_usr1(int sig) { usr1++; }
static void on_usr2(int sig) { usr2++; }

int main(int argc, char **argv) {
	if (argc < 3)
		return 2;
	size_t size = (size_t)atol(argv[2]) << 20;
	uint64_t *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return 3;
	size_t words = size / 8;
	for (size_t i = 0; i < words; i++)
		m[i] = i * 0x9E3779B97F4A7C15ull;
	struct sigaction sa = {0};
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = on_usr2;
	sigaction(SIGUSR2, &sa, NULL);
	char path[512];
	snprintf(path, sizeof path, "%s/report", argv[1]);
	int rfd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
	snprintf(path, sizeof path, "%s/ready", argv[1]);
	close(open(path, O_WRONLY | O_CREAT, 0644));
	int done = 0, rewritten = 0;
	for (;;) {
		if (usr2 != rewritten) {
			// Rewrite one page in a hundred (the same values: the memory stays right), then
			// append "rewritten N" to the report.
			rewritten = usr2;
			for (size_t i = 0; i < words; i += 100 * 512)
				for (size_t k = i; k < i + 512 && k < words; k++)
					m[k] = k * 0x9E3779B97F4A7C15ull;
			char line[64];
			write(rfd, line, snprintf(line, sizeof line, "rewritten %d\n", rewritten));
		}
		if (usr1 != done) {
			done = usr1;
			char line[64];
			int len = snprintf(line, sizeof line, "ok %d\n", done);
			for (size_t i = 0; i < words; i++)
				if (m[i] != i * 0x9E3779B97F4A7C15ull) {
					len = snprintf(line, sizeof line, "bad %zu\n", i * 8);
					break;
				}
			write(rfd, line, len);
		}
		struct timespec ts = {0, 2 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}
