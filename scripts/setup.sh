#!/usr/bin/env bash
# Installs what the demo and the tests need when it is missing, from the distribution's
# packages (Debian/Ubuntu apt): gcc and the C headers for the workloads, python3 and
# redis-server (real programs the tests checkpoint), util-linux (losetup, unshare, nsenter),
# iproute2 (ip, for the network namespace tests), make.
# Go itself must be installed (https://go.dev/dl; /usr/local/go/bin is searched).
set -euo pipefail
need=()
command -v gcc >/dev/null || need+=(gcc libc6-dev)
[ -e /usr/include/linux/kfd_ioctl.h ] || need+=(linux-libc-dev)
command -v python3 >/dev/null || need+=(python3)
command -v redis-server >/dev/null || need+=(redis-server)
command -v losetup >/dev/null && command -v unshare >/dev/null || need+=(util-linux)
command -v ip >/dev/null || need+=(iproute2)
command -v make >/dev/null || need+=(make)
if [ ${#need[@]} -gt 0 ]; then
	if ! command -v apt-get >/dev/null; then
		echo "setup: install these first: ${need[*]}" >&2
		exit 1
	fi
	echo "setup: installing ${need[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq "${need[@]}" >/dev/null
fi
export PATH=$PATH:/usr/local/go/bin
if ! command -v go >/dev/null; then
	echo "setup: Go is not installed (https://go.dev/dl)" >&2
	exit 1
fi
