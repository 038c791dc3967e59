# dyups for OpenResty. `make run` and `make test` install what they need (run them as root on Debian).
SHELL := /bin/bash
PROXY_PORT ?= 8080
API_PORT ?= 8081
PREFIX ?= /usr/local
DESTDIR ?=

.PHONY: all deps test-deps build lint spec it containers test run bench clean dist rock install uninstall compose

# What the compiled Lua is made of: dist, rock and install rebuild it only when one of these is newer.
LUA_INPUTS := $(shell find src types -name '*.ts' 2>/dev/null) tsconfig.json package.json package-lock.json \
	tools/build.sh tools/lualib-namespace-plugin.js

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

bench: build
	scripts/install-deps.sh --bench
	scripts/bench.sh

dist/lua/dyups/init.lua: $(LUA_INPUTS)
	tools/build.sh

# dist/dyups-VERSION.tar.gz: the compiled Lua, nginx/dyups.conf, install.sh, the rockspec, README, LICENSE, CHANGELOG
dist: dist/lua/dyups/init.lua
	@scripts/dist.sh dist >/dev/null

# dist/dyups-VERSION-1.src.rock and .all.rock (installs Debian's luarocks when it is missing)
rock: dist/lua/dyups/init.lua
	@command -v luarocks >/dev/null 2>&1 || scripts/install-deps.sh --rock
	@scripts/rock.sh "$$(scripts/dist.sh dist)" >/dev/null

# The release's own install.sh, from the tarball: PREFIX/share/lua/5.1/{dyups/,ngx/dyups.lua}, PREFIX/share/dyups/
install: dist/lua/dyups/init.lua
	@t=$$(mktemp -d) && trap 'rm -rf "$$t"' EXIT && tarball=$$(scripts/dist.sh "$$t") \
	  && tar -xzf "$$tarball" -C "$$t" && "$$t/$$(basename "$$tarball" .tar.gz)/install.sh" --prefix "$(PREFIX)" --destdir "$(DESTDIR)"

# Removes exactly what install put there (PREFIX/share/dyups/installed-files)
uninstall:
	@scripts/install.sh --uninstall --prefix "$(PREFIX)" --destdir "$(DESTDIR)"

# The docker-compose example with no registry: engine, local base image, release tarball, build, up
compose: dist/lua/dyups/init.lua
	PROXY_PORT=$(PROXY_PORT) API_PORT=$(API_PORT) scripts/compose.sh

clean:
	rm -rf dist
