#!/usr/bin/env bash
# Long fuzz passes on the stable toolchain: every target (or those named) for ITERS generated
# inputs per round, a fresh random seed each round, in a release build.
#
#   tests/fuzz/run.sh [ITERS] [ROUNDS] [TARGET...]     e.g. tests/fuzz/run.sh 200000 3 wire json
#
# Targets: wire json compression config ottl wal loki remote_write (see tests/fuzz/main.rs).
# A failing input is written to target/tmp/fuzz-failures/<target>/ and the round stops; copy it
# into tests/fuzz/corpus/<target>/ so every later run (CI included) replays it.
# WEIR_FUZZ_SAVE=1 also keeps inputs with new outcomes in the corpus.
set -euo pipefail
cd "$(dirname "$0")/../.."
iters=${1:-100000}
rounds=${2:-1}
shift $(( $# < 2 ? $# : 2 ))
cargo test --release --test fuzz --no-run
for r in $(seq 1 "$rounds"); do
  seed=$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')
  echo "== round $r of $rounds: WEIR_FUZZ_SEED=$seed WEIR_FUZZ_ITERS=$iters"
  WEIR_FUZZ_ITERS=$iters WEIR_FUZZ_SEED=$seed \
    cargo test --release --test fuzz -- --nocapture --test-threads=2 "$@"
done
