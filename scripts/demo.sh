#!/usr/bin/env bash
# The gocr demo: a process counts, is dumped (and killed), restored, and goes on counting
# from where it was. Needs root (ptrace, clone3 with set_tid), Go and gcc.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d /tmp/gocr-demo.XXXXXX)
counter_pid= gocr_pid=
cleanup() {
	# End only what this script started, by PID.
	[ -n "$counter_pid" ] && kill -9 "$counter_pid" 2>/dev/null || true
	[ -n "$gocr_pid" ] && wait "$gocr_pid" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "build gocr and the sample counter"
go build -o bin/gocr ./cmd/gocr
gcc -O1 -o "$work/counter" testdata/workloads/counter.c
log="$work/count.log"

say "start the counter: it appends 1, 2, 3... to $log every 5 ms"
"$work/counter" "$log" &
counter_pid=$!
sleep 0.5
echo "pid $counter_pid counted to $(tail -n1 "$log" | cut -d' ' -f1)"

say "gocr dump -t $counter_pid -D $work/img   (freezes it, writes the image, kills it)"
bin/gocr dump -t "$counter_pid" -D "$work/img"
{ wait "$counter_pid"; } 2>/dev/null || true
at=$(tail -n1 "$log" | cut -d' ' -f1)
echo "the counter is gone (stopped at $at):"
ps -p "$counter_pid" >/dev/null && echo "  still there?!" || echo "  ps -p $counter_pid: no such process"
sleep 0.5
echo "half a second later the log still ends at $(tail -n1 "$log" | cut -d' ' -f1)"

say "gocr show $work/img   (what the image holds, abridged)"
bin/gocr show "$work/img" | sed -n '1,12p'

say "gocr restore -D $work/img   (same PID, same memory, same open log file)"
bin/gocr restore -D "$work/img" &
gocr_pid=$!
sleep 0.5
now=$(tail -n1 "$log" | cut -d' ' -f1)
echo "pid $counter_pid is back: $(cat /proc/$counter_pid/comm), counted from $at to $now"

say "check: the log counts 1..$now with no gap and no repeat"
if awk '$1 != NR || $2 != NR { bad = 1; print "  line " NR ": " $0; exit } END { exit bad }' "$log"; then
	echo "  ok: every line in order"
else
	echo "  the count broke"; exit 1
fi
kill -9 "$counter_pid"
{ wait "$gocr_pid"; } 2>/dev/null || true
counter_pid= gocr_pid=
say "done"
