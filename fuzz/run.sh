#!/usr/bin/env bash
# Builds every cargo-fuzz target and runs each for SECONDS (default 20),
# starting from the committed seeds in corpus/<target>/ (new inputs go to a
# scratch directory, so the committed corpus stays as it is). Prints the
# executions per target; exits non-zero when a target found something (the
# input is saved under findings/<target>/). Without a nightly toolchain or
# cargo-fuzz it says so and exits 0.
set -uo pipefail
secs="${1:-20}"
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz: no nightly toolchain (rustup toolchain install nightly): skipping"
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz is not installed (cargo install cargo-fuzz --locked): skipping"
  exit 0
fi

# cargo-fuzz's default build: optimised, with debug assertions and overflow
# checks (they catch wrapping arithmetic on wire values) and AddressSanitizer.
echo "== fuzz: building"
cargo +nightly fuzz build || exit 1

work="$(mktemp -d "${TMPDIR:-/tmp}/conduit-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT
failed=()
summary=()
for t in $(cargo +nightly fuzz list); do
  mkdir -p "$work/$t" "findings/$t"
  echo "== fuzz: $t for ${secs}s"
  log="$work/$t.log"
  cargo +nightly fuzz run "$t" "$work/$t" "corpus/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
    -print_final_stats=1 -artifact_prefix="$here/findings/$t/" >"$log" 2>&1
  rc=$?
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  if [ "$rc" -ne 0 ]; then
    failed+=("$t")
    tail -n 60 "$log"
    summary+=("$t: FAILED after ${execs:-?} executions (exit $rc); inputs in findings/$t/")
  else
    summary+=("$t: ${execs:-?} executions in ${secs}s, no finding")
  fi
done

echo "== fuzz: summary"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: findings in: ${failed[*]}"
  exit 1
fi
