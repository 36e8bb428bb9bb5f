#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time each (not part of scripts/test.sh:
# it needs a nightly toolchain and minutes). What a target finds is saved under
# fuzz/artifacts/TARGET/ and must become a unit test in the module it broke.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 30 s, every target)
#   FUZZ_JOBS=2 scripts/fuzz.sh 60 auth                   (parallel workers per target)
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-30}
shift || true
case $secs in
  '' | *[!0-9]*) echo "fuzz.sh: seconds must be a whole number, not '$secs'" >&2; exit 2 ;;
esac

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz.sh: cargo-fuzz needs a nightly toolchain (-Z sanitizer); install it with" >&2
  echo "  rustup toolchain install nightly" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz from crates.io" >&2
  cargo install --locked cargo-fuzz
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

# libFuzzer's -jobs forks workers that log to fuzz-N.log; only when asked for.
parallel=()
if [ -n "${FUZZ_JOBS:-}" ]; then
  parallel=(-jobs="$FUZZ_JOBS" -workers="$FUZZ_JOBS")
fi

failed=()
for t in "${targets[@]}"; do
  echo "== fuzz target $t: ${secs}s"
  mkdir -p "fuzz/corpus/$t"
  # fuzz/corpus/T (kept locally, grows) first; fuzz/seeds/T (committed examples) read only.
  if ! cargo +nightly fuzz run "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- -max_total_time="$secs" -max_len=4096 \
      -print_final_stats=1 ${parallel[@]+"${parallel[@]}"}; then
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: findings in: ${failed[*]} (inputs under fuzz/artifacts/; reproduce with" \
       "cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/FILE)" >&2
  exit 1
fi
echo "fuzz.sh: no findings in ${targets[*]} (${secs}s each)"
