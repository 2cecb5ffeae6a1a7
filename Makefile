# Thin wrappers over the scripts CI runs.
.PHONY: test lint ci bench

test:
	go test -race ./...

lint:
	bash ci/lint.sh

ci:
	bash .ci/run

bench:
	bash bench/run.sh
