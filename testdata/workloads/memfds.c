// memfds: memfds made with the flags programs use: plain (mode 0777, no sealing: F_SEAL_SEAL
// set), MFD_ALLOW_SEALING with seals added, MFD_NOEXEC_SEAL (mode 0666, F_SEAL_EXEC), and one
// whose mode and owner were changed; each holds some bytes and a hole.
// usage: memfds DIR
// It creates DIR/ready; on each SIGUSR1 it checks each memfd's name, mode, owner, seals, size
// and content and appends to DIR/report "ok", or "bad:" and what differs.
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "report.h"

#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008U
#endif
#ifndef F_SEAL_EXEC
#define F_SEAL_EXEC 0x0020
#endif



struct m {
	const char *name;
	unsigned flags;
	int seals, fd;
	struct stat st;
	int want_seals;
} ms[] = {
	{"plain", 0, 0},
	{"sealed", MFD_ALLOW_SEALING, F_SEAL_SHRINK | F_SEAL_GROW},
	{"noexec", MFD_NOEXEC_SEAL, 0},
	{"chmod", MFD_ALLOW_SEALING, 0},
};
#define N (sizeof ms / sizeof ms[0])

static void check(void) {
	for (size_t i = 0; i < N; i++) {
		struct m *m = &ms[i];
		struct stat st;
		fstat(m->fd, &st);
		char what[64];
		snprintf(what, sizeof what, "%s mode", m->name);
		if (st.st_mode != m->st.st_mode)
			badv(what, st.st_mode, m->st.st_mode);
		snprintf(what, sizeof what, "%s owner", m->name);
		if (st.st_uid != m->st.st_uid || st.st_gid != m->st.st_gid)
			badv(what, st.st_uid * 100000L + st.st_gid, m->st.st_uid * 100000L + m->st.st_gid);
		snprintf(what, sizeof what, "%s size", m->name);
		if (st.st_size != m->st.st_size)
			badv(what, st.st_size, m->st.st_size);
		snprintf(what, sizeof what, "%s seals", m->name);
		int seals = fcntl(m->fd, F_GET_SEALS);
		if (seals != m->want_seals)
			badv(what, seals, m->want_seals);
		char b[16] = {0};
		snprintf(what, sizeof what, "%s content", m->name);
		if (pread(m->fd, b, strlen(m->name), 0) != (ssize_t)strlen(m->name) || strcmp(b, m->name))
			badv(what, 0, 1);
		char link[64], got[128] = {0}, want[128];
		snprintf(link, sizeof link, "/proc/self/fd/%d", m->fd);
		readlink(link, got, sizeof got - 1);
		snprintf(want, sizeof want, "/memfd:%s (deleted)", m->name);
		snprintf(what, sizeof what, "%s name", m->name);
		if (strcmp(got, want))
			badv(what, 0, 1);
	}
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	for (size_t i = 0; i < N; i++) {
		struct m *m = &ms[i];
		m->fd = memfd_create(m->name, m->flags);
		if (m->fd < 0)
			return 3;
		pwrite(m->fd, m->name, strlen(m->name), 0);
		ftruncate(m->fd, 1 << 20);
		if (m->seals && fcntl(m->fd, F_ADD_SEALS, m->seals) < 0)
			return 4;
		if (!strcmp(m->name, "chmod") && (fchmod(m->fd, 0640) < 0 || fchown(m->fd, 1234, 5678) < 0))
			return 5;
		fstat(m->fd, &m->st);
		m->want_seals = fcntl(m->fd, F_GET_SEALS);
	}
	int rfd = report_open(argv[1]);
	report_loop(rfd, argv[1], check);
}
