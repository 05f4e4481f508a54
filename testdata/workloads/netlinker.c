// netlinker: a process holding a NETLINK_ROUTE socket bound to its port id and in three
// multicast groups (RTMGRP_LINK and RTMGRP_IPV4_IFADDR at bind, RTNLGRP_IPV4_ROUTE added).
// usage: netlinker DIR
// It creates DIR/ready. On SIGUSR1 it asks the socket its port id and groups, sends an
// RTM_GETLINK dump request on it and counts the links in the answer, and appends
// "portid=<same|changed> groups=<bitmap> links=<n>" to DIR/report.
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static volatile sig_atomic_t usr1;
static void on_usr1(int sig) { usr1 = 1; }

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	struct sockaddr_nl sa = {.nl_family = AF_NETLINK, .nl_groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR};
	int route = RTNLGRP_IPV4_ROUTE;
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) ||
	    setsockopt(fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &route, sizeof route)) {
		perror("netlink");
		return 1;
	}
	socklen_t len = sizeof sa;
	getsockname(fd, (struct sockaddr *)&sa, &len);
	uint32_t portid = sa.nl_pid;
	struct sigaction act = {0};
	act.sa_handler = on_usr1;
	sigaction(SIGUSR1, &act, NULL);
	char path[512];
	snprintf(path, sizeof path, "%s/ready", argv[1]);
	close(open(path, O_WRONLY | O_CREAT, 0644));
	while (!usr1) // not pause: a signal taken between the test and pause() would be missed
		usleep(2000);
	len = sizeof sa;
	getsockname(fd, (struct sockaddr *)&sa, &len);
	uint32_t groups[4] = {0};
	socklen_t glen = sizeof groups;
	getsockopt(fd, SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, groups, &glen);
	struct {
		struct nlmsghdr h;
		struct ifinfomsg i;
	} req = {{sizeof req, RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 1, 0}, {AF_UNSPEC}};
	send(fd, &req, sizeof req, 0);
	int links = 0, done = 0;
	static char buf[65536];
	while (!done) {
		ssize_t n = recv(fd, buf, sizeof buf, 0);
		if (n <= 0)
			break;
		for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, n); h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_type == NLMSG_DONE || h->nlmsg_type == NLMSG_ERROR)
				done = 1;
			else if (h->nlmsg_type == RTM_NEWLINK && h->nlmsg_seq == 1)
				links++;
		}
	}
	char line[128];
	int l = snprintf(line, sizeof line, "portid=%s groups=%#x links=%d\n", sa.nl_pid == portid ? "same" : "changed", groups[0], links);
	snprintf(path, sizeof path, "%s/report", argv[1]);
	int r = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
	write(r, line, l);
	for (;;)
		pause();
}
