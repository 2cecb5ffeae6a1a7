#!/usr/bin/env bash
# Formatting, module tidiness, vet and staticcheck (at a pinned version), for
# the product module at the root and for the benchmark module in bench/,
# which holds the peers we measure against so that users of wsgate never
# find them in their module graph (and bench/centrifugo, which only pins
# the Centrifugo baseline's version).
set -euo pipefail
cd "$(dirname "$0")/.."
STATICCHECK_VERSION=v0.8.2

unformatted=$(gofmt -l . | grep -v '^testdata/' || true)
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

# go.mod and go.sum must be exactly what `go mod tidy` makes of them.
# bench/centrifugo pins the Centrifugo baseline in a module of its own.
for mod in . bench bench/centrifugo; do
  if ! (cd "$mod" && go mod tidy -diff); then
    echo "$mod/go.mod is not tidy: run (cd $mod && go mod tidy)"; exit 1
  fi
done

sc="$(go env GOPATH)/bin/staticcheck"
if ! [ -x "$sc" ] || ! "$sc" -version | grep -q "${STATICCHECK_VERSION#v}"; then
  go install "honnef.co/go/tools/cmd/staticcheck@${STATICCHECK_VERSION}"
fi

go vet ./...
"$sc" ./...

# The benchmark module: baseline servers and tabulate.
(cd bench && go vet ./... && go build ./... && "$sc" ./...)
