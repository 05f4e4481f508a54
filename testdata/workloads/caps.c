// caps: a root process that becomes uid 1000 keeping some capabilities, as daemons do.
// usage: caps DIR
// It drops CAP_SYS_BOOT and CAP_MKNOD from its bounding set, keeps CAP_NET_BIND_SERVICE
// (effective, inheritable, ambient), CAP_NET_RAW (permitted, inheritable) and CAP_CHOWN
// (permitted) across setresuid(1000), sets securebits, an oom_score_adj of 345, an audit
// login uid of 4242 (where the kernel has one) and a membarrier registration; a second thread
// then empties its own effective set (capabilities are per thread). It writes
// "ready" to DIR/report. On each SIGUSR1 it reads all of them again, binds port 1023 (which needs
// CAP_NET_BIND_SERVICE) and issues a private expedited membarrier (which needs the
// registration), and appends to DIR/report "ok", or "bad:" and what differs.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/membarrier.h>
#include <linux/securebits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "report.h"

#ifndef MEMBARRIER_CMD_GET_REGISTRATIONS
#define MEMBARRIER_CMD_GET_REGISTRATIONS (1 << 9) // Linux 6.3
#endif


static int capset3(unsigned long long eff, unsigned long long prm, unsigned long long inh) {
	struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct d[2] = {{eff, prm, inh}, {eff >> 32, prm >> 32, inh >> 32}};
	return syscall(SYS_capset, &h, d);
}

#define B(c) (1ULL << (c))
static const unsigned long long eff = B(CAP_NET_BIND_SERVICE), prm = B(CAP_NET_BIND_SERVICE) | B(CAP_NET_RAW) | B(CAP_CHOWN),
				inh = B(CAP_NET_BIND_SERVICE) | B(CAP_NET_RAW);
static const int secbits = SECBIT_KEEP_CAPS | SECBIT_NO_CAP_AMBIENT_RAISE;

static char status0[1024], thread0[1024];
static volatile int thread_tid;
static int has_loginuid;

// The capability lines of /proc/self/status, or of the thread tid's.
static void caplines_of(int tid, char *out, size_t n) {
	char path[64] = "/proc/self/status";
	if (tid)
		snprintf(path, sizeof path, "/proc/self/task/%d/status", tid);
	FILE *f = fopen(path, "r");
	char line[256];
	out[0] = 0;
	while (f && fgets(line, sizeof line, f))
		if (!strncmp(line, "Cap", 3) || !strncmp(line, "Uid", 3))
			strncat(out, line, n - strlen(out) - 1);
	if (f)
		fclose(f);
}

static void caplines(char *out, size_t n) { caplines_of(0, out, n); }

static void *thread(void *arg) {
	capset3(0, prm, inh);
	caplines_of(syscall(SYS_gettid), thread0, sizeof thread0);
	thread_tid = syscall(SYS_gettid);
	for (;;)
		pause();
	return NULL;
}

static long readnum(const char *path) {
	char b[32] = {0};
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	read(fd, b, sizeof b - 1);
	close(fd);
	return strtol(b, NULL, 10);
}


static void check(void) {
	char now[1024];
	report[0] = 0;
	caplines(now, sizeof now);
	if (strcmp(now, status0)) {
		strncat(report, " /proc/self/status differs: ", sizeof report - strlen(report) - 1);
		for (char *c = now; *c; c++)
			if (*c == '\n' || *c == '\t')
				*c = ' ';
		strncat(report, now, sizeof report - strlen(report) - 1);
	}
	caplines_of(thread_tid, now, sizeof now);
	if (strcmp(now, thread0))
		bad("the second thread's capabilities differ");
	int sb = prctl(PR_GET_SECUREBITS);
	if (sb != secbits)
		badv("securebits", sb, secbits);
	long oom = readnum("/proc/self/oom_score_adj");
	if (oom != 345)
		badv("oom_score_adj", oom, 345);
	if (has_loginuid && readnum("/proc/self/loginuid") != 4242)
		badv("loginuid", readnum("/proc/self/loginuid"), 4242);
	int regs = syscall(SYS_membarrier, MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0);
	if (regs != MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED)
		badv("membarrier registrations", regs, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED);
	if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) != 0)
		badv("membarrier private expedited(errno)", errno, 0);
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(1023), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &(int){1}, sizeof(int));
	if (bind(s, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EADDRINUSE)
		badv("bind port 1023(errno)", errno, 0);
	close(s);
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	int rfd = report_open(argv[1]);
	int fd = open("/proc/self/oom_score_adj", O_WRONLY);
	if (fd < 0 || write(fd, "345", 3) != 3)
		return 3;
	close(fd);
	fd = open("/proc/self/loginuid", O_WRONLY);
	has_loginuid = fd >= 0 && write(fd, "4242", 4) == 4;
	if (fd >= 0)
		close(fd);
	if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) != 0)
		return 4;
	if (prctl(PR_CAPBSET_DROP, CAP_SYS_BOOT) < 0 || prctl(PR_CAPBSET_DROP, CAP_MKNOD) < 0 || prctl(PR_SET_KEEPCAPS, 1) < 0)
		return 5;
	if (setgroups(0, NULL) < 0 || setresgid(1000, 1000, 1000) < 0 || setresuid(1000, 1000, 1000) < 0)
		return 6;
	if (capset3(prm | B(CAP_SETPCAP), prm | B(CAP_SETPCAP), inh) < 0 || prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_BIND_SERVICE, 0, 0) < 0 ||
	    prctl(PR_SET_SECUREBITS, secbits) < 0 || capset3(eff, prm, inh) < 0) {
		dprintf(rfd, "setup failed: %s\n", strerror(errno));
		return 7;
	}
	caplines(status0, sizeof status0);
	pthread_t t;
	pthread_create(&t, NULL, thread, NULL);
	while (!thread_tid)
		usleep(1000);
	report_loop(rfd, NULL, check);
}
