// container: a small service for a container of its own namespaces (network, IPC, UTS, pid).
// usage: container DIR PORT
// It brings its loopback link up, makes a System V semaphore set (values 3 and 7) and a message
// queue holding "hello" (type 1) and "world" (type 2), a shared memory segment holding
// "unattached" that it detaches (no process attaches it), forks a helper it talks to over a unix
// socketpair, and serves 127.0.0.1:PORT: each connection gets "pong N\n", N its count of
// connections. Every 5 ms it logs its counter to DIR/root.log after a byte went to the helper
// and came back. On SIGUSR1 it checks its semaphores, its queue and its host name and writes
// "ok" or what is wrong to DIR/report (it attaches the segment to check it, and detaches it).
#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef MSG_COPY
#define MSG_COPY 040000
#endif

static int semid, msqid, shmid;
static const char *dir;
static volatile sig_atomic_t asked;

static void on_usr1(int sig) { (void)sig; asked = 1; }

static void report(void) {
	char buf[512] = "ok";
	unsigned short vals[2] = {0, 0};
	struct msqid_ds qs;
	struct {
		long mtype;
		char text[64];
	} m;
	char host[64] = "";
	gethostname(host, sizeof host - 1);
	if (semctl(semid, 0, GETALL, vals) != 0 || vals[0] != 3 || vals[1] != 7)
		snprintf(buf, sizeof buf, "semaphores %d %d, want 3 7", vals[0], vals[1]);
	else if (msgctl(msqid, IPC_STAT, &qs) != 0 || qs.msg_qnum != 2)
		snprintf(buf, sizeof buf, "queue holds %ld messages, want 2", (long)qs.msg_qnum);
	else if (msgrcv(msqid, &m, sizeof m.text, 1, IPC_NOWAIT | MSG_COPY) != 5 || m.mtype != 2 || memcmp(m.text, "world", 5) != 0)
		snprintf(buf, sizeof buf, "second message is not world of type 2");
	else if (strcmp(host, "box-gocr") != 0)
		snprintf(buf, sizeof buf, "host name %s", host);
	else {
		char *p = shmat(shmid, NULL, SHM_RDONLY);
		if (p == (void *)-1 || strcmp(p, "unattached") != 0)
			snprintf(buf, sizeof buf, "the unattached segment (%s)", p == (void *)-1 ? "gone" : "changed");
		if (p != (void *)-1)
			shmdt(p);
	}
	char path[512];
	snprintf(path, sizeof path, "%s/report", dir);
	FILE *f = fopen(path, "w");
	if (f) {
		fprintf(f, "%s\n", buf);
		fclose(f);
	}
}

int main(int argc, char **argv) {
	if (argc < 3)
		return 2;
	dir = argv[1];
	if (sethostname("box-gocr", 8) != 0)
		return 3;
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	struct ifreq ifr;
	memset(&ifr, 0, sizeof ifr);
	strcpy(ifr.ifr_name, "lo");
	if (ioctl(s, SIOCGIFFLAGS, &ifr) != 0)
		return 4;
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0)
		return 5;
	close(s);
	semid = semget(0x1234, 2, IPC_CREAT | 0600);
	unsigned short init[2] = {3, 7};
	if (semid < 0 || semctl(semid, 0, SETALL, init) != 0)
		return 6;
	msqid = msgget(0x4321, IPC_CREAT | 0600);
	struct {
		long mtype;
		char text[8];
	} m1 = {1, "hello"}, m2 = {2, "world"};
	if (msqid < 0 || msgsnd(msqid, &m1, 5, 0) != 0 || msgsnd(msqid, &m2, 5, 0) != 0)
		return 7;
	shmid = shmget(0x5678, 8192, IPC_CREAT | 0600);
	char *p = shmid < 0 ? (void *)-1 : shmat(shmid, NULL, 0);
	if (p == (void *)-1)
		return 10;
	strcpy(p, "unattached");
	shmdt(p);
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) != 0)
		return 8;
	if (fork() == 0) {
		close(sp[0]);
		char c;
		while (read(sp[1], &c, 1) == 1)
			if (write(sp[1], &c, 1) != 1)
				return 9;
		return 0;
	}
	close(sp[1]);
	int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	int one = 1;
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2])), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 16) != 0)
		return 10;
	signal(SIGUSR1, on_usr1);
	char path[512];
	snprintf(path, sizeof path, "%s/root.log", dir);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	long served = 0;
	for (long n = 1;; n++) {
		char c = (char)n, back = 0;
		if (write(sp[0], &c, 1) != 1 || read(sp[0], &back, 1) != 1 || back != c)
			return 11;
		char buf[64];
		int len = snprintf(buf, sizeof buf, "%ld\n", n);
		if (write(fd, buf, len) != len)
			return 12;
		int cfd = accept(l, NULL, NULL);
		if (cfd >= 0) {
			len = snprintf(buf, sizeof buf, "pong %ld\n", ++served);
			if (write(cfd, buf, len) != len)
				return 13;
			close(cfd);
		}
		if (asked) {
			asked = 0;
			report();
		}
		struct timespec ts = {0, 5 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}
