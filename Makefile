# dyups for OpenResty. `make run` and `make test` install what they need (run them as root on Debian).
SHELL := /bin/bash
PROXY_PORT ?= 8080
API_PORT ?= 8081

.PHONY: all deps test-deps build lint spec it containers test run bench clean

all: build

deps:
	scripts/install-deps.sh

test-deps:
	scripts/install-deps.sh --test

build:
	tools/build.sh

lint:
	scripts/lint.sh

spec: build
	scripts/spec.sh

it: build
	scripts/it.sh

containers: build
	scripts/containers.sh

# Every suite: specs, integration against a real nginx, containers. Last line: "N passed, N failed".
test: test-deps
	scripts/test.sh

run: deps build
	PROXY_PORT=$(PROXY_PORT) API_PORT=$(API_PORT) scripts/run.sh

bench: test-deps build
	scripts/bench.sh

clean:
	rm -rf dist
