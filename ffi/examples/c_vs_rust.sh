#!/bin/sh
# C ping-pong over shm: through libconduit against the Rust `shm` round trip,
# interleaved in one session: Rust, C, Rust, C, ..., Rust. Each C run is judged
# against the mean of the Rust runs just before and after it (the vCPUs'
# placement, and with it every figure, can change during a session; a row
# whose two Rust runs differ by more than 25 % is marked as not comparable).
#
# usage: ffi/examples/c_vs_rust.sh [PAIRS] [ROUND_TRIPS]   (from the repository root)
set -eu
pairs=${1:-3}
n=${2:-300000}
warm=$((n / 10))
cc=${CC:-cc}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

cargo build --release -q -p conduit-ffi -p conduit-bench
for x in ping pong; do
    "$cc" -std=c11 -O2 -Wall -Wextra -Wpedantic -Werror -I ffi/include "ffi/examples/$x.c" \
        target/release/libconduit.a -lpthread -ldl -lm -o "$out/$x"
done

rust() { # prints "p50 p99"
    target/release/conduit-bench latency --channel shm --size 32 --messages "$n" --warmup "$warm" \
        --json "$out/r.json" >/dev/null 2>&1
    tr ',' '\n' <"$out/r.json" | awk -F: '/"p50_ns"/{a=$2} /"p99_ns"/{b=$2} END{print a+0, b+0}'
}
c() { # prints "p50 p99"
    tag=cvr$$-$1
    "$out/pong" "shm:$tag-a" "shm:$tag-b" &
    pid=$!
    "$out/ping" "shm:$tag-a" "shm:$tag-b" "$n" "$warm" 32 >"$out/c.txt"
    wait "$pid"
    sed -n 's/.*p50=\([0-9]*\).*p99=\([0-9]*\).*/\1 \2/p' "$out/c.txt"
}

prev=$(rust)
echo "32-byte round trips, $n after $warm warm-up; ratio = C / mean of the Rust runs around it"
printf '%-6s %9s %9s %9s %9s %8s %8s\n' run "Rust p50" "Rust p99" "C p50" "C p99" "p50 x" "p99 x"
i=1
while [ "$i" -le "$pairs" ]; do
    cur=$(c "$i")
    next=$(rust)
    echo "$prev $cur $next" | awk -v i="$i" '{
        r50 = ($1 + $5) / 2; r99 = ($2 + $6) / 2;
        hi = $1 > $5 ? $1 : $5; lo = $1 > $5 ? $5 : $1;
        # The Rust runs around it disagree: the vCPU placement changed.
        note = (hi > 1.25 * lo) ? "  placement changed: not comparable" : "";
        printf "%-6s %9.0f %9.0f %9d %9d %8.2f %8.2f%s\n", i, r50, r99, $3, $4, $3 / r50, $4 / r99, note }'
    prev=$next
    i=$((i + 1))
done
