// report.h: the loops of the workloads: one that checks its own state when asked, and a
// counter.
//
// A workload sets its state up, opens DIR/report with report_open, and calls report_loop with
// a check function that calls bad or badv for each thing that differs from what it set up.
// report_loop checks once (a difference then ends the process with status 90, its report
// saying "bad before the dump:"), says it is ready (creates DIR/ready, or, when dir is NULL,
// writes "ready" to the report), and then, at each SIGUSR1, checks and appends "ok", or "bad:"
// and the differences, to the report.
#ifndef REPORT_H
#define REPORT_H

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char report[2048];
static volatile sig_atomic_t report_asked;

static void report_on_usr1(int sig) { report_asked++; }

// bad notes a difference.
__attribute__((unused)) static void bad(const char *what) {
	strncat(report, " ", sizeof report - strlen(report) - 1);
	strncat(report, what, sizeof report - strlen(report) - 1);
}

// badv notes a difference in a value.
__attribute__((unused)) static void badv(const char *what, long got, long want) {
	char b[256];
	snprintf(b, sizeof b, "%s=%ld(want %ld)", what, got, want);
	bad(b);
}

__attribute__((unused)) static int report_open(const char *dir) {
	char path[600];
	snprintf(path, sizeof path, "%s/report", dir);
	return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

__attribute__((unused)) static void report_loop(int rfd, const char *dir, void (*check)(void)) {
	struct sigaction act = {0};
	act.sa_handler = report_on_usr1;
	sigaction(SIGUSR1, &act, NULL);
	report[0] = 0;
	check();
	if (report[0]) {
		dprintf(rfd, "bad before the dump:%s\n", report);
		exit(90);
	}
	if (dir) {
		char path[600];
		snprintf(path, sizeof path, "%s/ready", dir);
		close(open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
	} else {
		dprintf(rfd, "ready\n");
	}
	for (int seen = 0;;) {
		while (report_asked == seen) {
			struct timespec ts = {0, 2 * 1000 * 1000};
			nanosleep(&ts, NULL);
		}
		seen = report_asked;
		report[0] = 0;
		check();
		dprintf(rfd, report[0] ? "bad:%s\n" : "ok\n", report);
	}
}

// count_forever appends 1, 2, 3... to DIR/NAME every 5 ms, as counter.c does; with ready,
// DIR/ready is made first.
__attribute__((unused)) static void count_forever(const char *dir, const char *name, int ready) {
	char path[600];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	int log = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (ready) {
		snprintf(path, sizeof path, "%s/ready", dir);
		close(open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
	}
	for (long n = 1;; n++) {
		dprintf(log, "%ld\n", n);
		struct timespec ts = {0, 5 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}

#endif
