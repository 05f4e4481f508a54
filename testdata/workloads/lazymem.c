// lazymem: a large memory that checks itself, and a log that shows it runs.
// usage: lazymem DIR MIB
// Fills MIB mebibytes with a pattern, creates DIR/ready, then appends a line to DIR/log
// every millisecond ("N tick"). At SIGUSR1 it checks every byte and appends "ok" or "bad OFFSET" to
// DIR/report. At SIGUSR2 it drops its last mebibyte (MADV_DONTNEED: zeros from then on) and
// forks a child that checks all of it and exits 0 or 1; it appends "child ok" or "child bad"
// to DIR/report.
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t usr1, usr2;
static void on_usr1(int sig) { usr1 = 1; }
static void on_usr2(int sig) { usr2 = 1; }

static uint64_t *m;
static size_t words, dropped_from; // words at and after dropped_from are zeros

static long check(void) {
	for (size_t i = 0; i < words; i++) {
		uint64_t want = i < dropped_from ? i * 0x9E3779B97F4A7C15ull + 7 : 0;
		if (m[i] != want)
			return (long)i;
	}
	return -1;
}

int main(int argc, char **argv) {
	if (argc < 3)
		return 2;
	size_t size = (size_t)atol(argv[2]) << 20;
	m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return 3;
	words = dropped_from = size / 8;
	for (size_t i = 0; i < words; i++)
		m[i] = i * 0x9E3779B97F4A7C15ull + 7;
	struct sigaction sa = {0};
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = on_usr2;
	sigaction(SIGUSR2, &sa, NULL);
	char path[512];
	snprintf(path, sizeof path, "%s/log", argv[1]);
	int log = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	snprintf(path, sizeof path, "%s/report", argv[1]);
	int rep = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	snprintf(path, sizeof path, "%s/ready", argv[1]);
	close(open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
	for (unsigned long n = 1;; n++) {
		char line[64];
		int k = snprintf(line, sizeof line, "%lu tick\n", n);
		write(log, line, k);
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
		if (usr2) {
			usr2 = 0;
			size_t mib = (1 << 20) / 8;
			madvise(m + words - mib, 1 << 20, MADV_DONTNEED);
			dropped_from = words - mib;
			pid_t c = fork();
			if (c == 0)
				_exit(check() < 0 ? 0 : 1);
			int st = 0;
			waitpid(c, &st, 0);
			k = snprintf(line, sizeof line, "child %s\n", WIFEXITED(st) && WEXITSTATUS(st) == 0 ? "ok" : "bad");
			write(rep, line, k);
		}
		if (usr1) {
			usr1 = 0;
			long bad = check();
			if (bad < 0)
				k = snprintf(line, sizeof line, "ok\n");
			else
				k = snprintf(line, sizeof line, "bad %ld\n", bad * 8);
			write(rep, line, k);
		}
	}
}
