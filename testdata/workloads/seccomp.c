// seccomp: a counter (see counter.c) under a seccomp filter that makes getppid fail with
// errno 42 and getitimer fail with EPERM (getitimer is one of the calls gocr runs inside a
// process). On SIGUSR1 it appends "getppid=<result> errno=<errno>" to LOGFILE.report.
// usage: seccomp LOGFILE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t usr1;
static void on_usr1(int sig) { usr1++; }

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getppid, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 42),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getitimer, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {sizeof f / sizeof f[0], f};
	struct sigaction sa = {0};
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
	char path[512];
	snprintf(path, sizeof path, "%s.report", argv[1]);
	int rfd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
		return 3;
	int reported = 0;
	for (long n = 1;; n++) {
		char buf[64];
		int k = snprintf(buf, sizeof buf, "%ld %ld\n", n, n);
		if (write(fd, buf, k) != k)
			return 4;
		if (usr1 != reported) {
			reported = usr1;
			errno = 0;
			long r = syscall(SYS_getppid);
			k = snprintf(buf, sizeof buf, "getppid=%ld errno=%d\n", r, errno);
			write(rfd, buf, k);
		}
		struct timespec ts = {0, 5 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}
