#!/usr/bin/env bash
# The GPU demo, on a machine without an AMD GPU: gocr-kfdemu presents an emulated /dev/kfd and
# two render nodes; a two-process GPU job sets up BOs, queues and events on both GPUs and
# counts, checking its BOs' contents at every step; gocr dumps it with the amdgpu plugin
# (killing it), restores it, and it goes on. Needs root, Go, gcc and /dev/fuse.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin

if [ "${1:-}" != inside ]; then
	./scripts/setup.sh
	go build -o bin/gocr ./cmd/gocr
	go build -o bin/gocr-plugin-amdgpu ./plugins/amdgpu/gocr-plugin-amdgpu
	go build -o bin/gocr-kfdemu ./plugins/amdgpu/gocr-kfdemu
	exec bin/gocr-kfdemu --gpus 2 -- "$0" inside
fi

work=$(mktemp -d /tmp/gocr-gpu-demo.XXXXXX)
pids=()
cleanup() {
	# End only what this script started, by PID.
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

gcc -O1 -I testdata/workloads/include -o "$work/gpujob" testdata/workloads/gpujob.c
say "start the GPU job: parent and child, each with VRAM, GTT, USERPTR and doorbell BOs on both GPUs"
"$work/gpujob" "$work" 1024 &
job=$!
pids+=("$job")
while [ ! -e "$work/child.ready" ] || [ ! -e "$work/parent.ready" ]; do sleep 0.1; done
child=$(cat /proc/$job/task/$job/children)
pids+=($child)
echo "parent $job counted to $(tail -n1 "$work/parent.log"), child $child to $(tail -n1 "$work/child.log")"
grep -E 'kfd|renderD' /proc/$job/maps | head -4

say "gocr --plugin amdgpu dump -t $job -D $work/img"
bin/gocr --plugin amdgpu dump -t "$job" -D "$work/img"
ls -l "$work/img" | grep amdgpu
# The killed job's pids must be free for the restore: wait until they are reaped.
while [ -e /proc/$job ] || [ -e /proc/$child ]; do sleep 0.2; done

say "gocr restore --check-only -D $work/img"
bin/gocr restore --check-only -D "$work/img"

say "gocr restore -d -D $work/img"
bin/gocr restore -d -D "$work/img"
at=$(tail -n1 "$work/parent.log" | cut -d' ' -f1)
sleep 1
echo "parent $job went on from $at to $(tail -n1 "$work/parent.log" | cut -d' ' -f1), child to $(tail -n1 "$work/child.log" | cut -d' ' -f1)"
if grep -h BAD "$work"/*.log; then
	echo "a BO lost its content" >&2
	exit 1
fi
echo "every BO held what it held at the dump"
