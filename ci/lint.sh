#!/usr/bin/env bash
# Formatting, vet and staticcheck, at a pinned staticcheck version.
set -euo pipefail
cd "$(dirname "$0")/.."
STATICCHECK_VERSION=v0.8.2

unformatted=$(gofmt -l . | grep -v '^testdata/' || true)
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi
go vet ./...
sc="$(go env GOPATH)/bin/staticcheck"
if ! [ -x "$sc" ] || ! "$sc" -version | grep -q "${STATICCHECK_VERSION#v}"; then
  go install "honnef.co/go/tools/cmd/staticcheck@${STATICCHECK_VERSION}"
fi
"$sc" ./...
