#!/usr/bin/env bash
# Short runs of every fuzz target, so that CI finds what the seed corpora
# (testdata/fuzz) miss. FUZZTIME per target: an execution count by default
# (20000x), because a duration can end a run with a spurious "context
# deadline exceeded" when the deadline races a busy worker (a bug of Go's
# fuzzing coordinator until Go 1.27, go.dev/issue/75804); run longer by
# hand, e.g. FUZZTIME=10m bash ci/fuzz.sh, and read a failure without a
# written input as that bug.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME="${FUZZTIME:-20000x}"
# package:target pairs, found by listing every Fuzz function.
targets=$(grep -rl --include='*_test.go' '^func Fuzz' . | grep -v '^./bench/' | while read -r f; do
  pkg=$(dirname "$f")
  grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | sed "s|^func |$pkg:|"
done | sort -u)
for t in $targets; do
  pkg=${t%%:*}
  name=${t#*:}
  echo "fuzz $pkg $name for $FUZZTIME"
  go test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime 5s "$pkg"
done
