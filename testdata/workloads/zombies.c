// zombies: a parent with two dead children it has not reaped.
// usage: zombies DIR
// Child a exits with 7; child b is killed by SIGTERM. The parent writes "A B" (their pids) to
// DIR/pids, counts in DIR/count.log every 5 ms, and on SIGUSR1 reaps both and appends to
// DIR/report how each ended ("a exit 7 b signal 15"), or what went wrong.
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t asked;
static void ask(int sig) { asked = sig; }

static void status(char *buf, size_t n, const char *name, pid_t pid) {
	int ws;
	pid_t got = waitpid(pid, &ws, WNOHANG);
	if (got != pid)
		snprintf(buf, n, "%s not a zombie (waitpid %d)", name, (int)got);
	else if (WIFEXITED(ws))
		snprintf(buf, n, "%s exit %d", name, WEXITSTATUS(ws));
	else if (WIFSIGNALED(ws))
		snprintf(buf, n, "%s signal %d", name, WTERMSIG(ws));
	else
		snprintf(buf, n, "%s status %#x", name, ws);
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	signal(SIGUSR1, ask);
	pid_t a = fork();
	if (a == 0)
		_exit(7);
	pid_t b = fork();
	if (b == 0) {
		for (;;)
			pause();
	}
	kill(b, SIGTERM);
	char path[512];
	snprintf(path, sizeof path, "%s/count.log", argv[1]);
	int log = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	// Both dead (zombies) before the pids are given.
	for (;;) {
		char p[64], st[256];
		int dead = 0;
		for (pid_t c = a; c; c = c == a ? b : 0) {
			snprintf(p, sizeof p, "/proc/%d/stat", (int)c);
			FILE *f = fopen(p, "r");
			if (f && fscanf(f, "%*d %*s %255s", st) == 1 && st[0] == 'Z')
				dead++;
			if (f)
				fclose(f);
		}
		if (dead == 2)
			break;
		usleep(1000);
	}
	snprintf(path, sizeof path, "%s/pids", argv[1]);
	FILE *f = fopen(path, "w");
	fprintf(f, "%d %d\n", (int)a, (int)b);
	fclose(f);
	for (long n = 1;; n++) {
		dprintf(log, "%ld\n", n);
		if (asked) {
			char ra[128], rb[128];
			status(ra, sizeof ra, "a", a);
			status(rb, sizeof rb, "b", b);
			snprintf(path, sizeof path, "%s/report", argv[1]);
			FILE *r = fopen(path, "a");
			fprintf(r, "%s %s\n", ra, rb);
			fclose(r);
			asked = 0;
		}
		struct timespec ts = {0, 5 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}
