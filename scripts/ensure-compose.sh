#!/usr/bin/env bash
# Make `docker compose config` available without a Docker engine, for `make test`'s check of
# docker-compose.yml. Machines of this project's kind have the docker client but not the compose
# plugin; the plugin is a Go program, so it is built once from the Go module proxy with the Go
# toolchain, cached outside the checkout, and installed as a docker CLI plugin for this user.
set -euo pipefail

COMPOSE_VERSION=v2.40.3
CACHE=${DEVACT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/device-activity}/docker-compose-$COMPOSE_VERSION
PLUGIN_DIR=$HOME/.docker/cli-plugins

if docker compose version >/dev/null 2>&1; then
  exit 0
fi
command -v docker >/dev/null || { echo "no docker client: cannot check docker-compose.yml" >&2; exit 1; }
command -v go >/dev/null || { echo "no Go toolchain to build the compose plugin" >&2; exit 1; }

if [[ ! -x $CACHE/docker-compose ]]; then
  echo "building the docker compose plugin $COMPOSE_VERSION (once; cached in $CACHE)" >&2
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  (
    cd "$work"
    export GOFLAGS=-mod=mod
    go mod init devact-compose-build >/dev/null 2>&1
    go get "github.com/docker/compose/v2@$COMPOSE_VERSION" >/dev/null 2>&1
    go build -o docker-compose github.com/docker/compose/v2/cmd
  )
  mkdir -p "$CACHE"
  mv "$work/docker-compose" "$CACHE/docker-compose"
fi
mkdir -p "$PLUGIN_DIR"
ln -sf "$CACHE/docker-compose" "$PLUGIN_DIR/docker-compose"
docker compose version >&2
