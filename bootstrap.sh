#!/usr/bin/env bash
# Sets up everything codex-swarm needs on a fresh Debian machine, then runs the main job or the tests.
#
#   ./bootstrap.sh up [ARGS...]   install, then `swarm up` (the embedded system on this machine)
#   ./bootstrap.sh test           install, then lint, type-check and run the whole test suite
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
PYTHON=${PYTHON:-python3}
CODEX_VERSION=0.169.0   # the pinned Codex CLI; the runner image carries the same version
CODEX_DIR=.codex-cli

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

apt_install() {
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        say "missing system packages: $* (install them as root: apt-get install -y $*)"
        exit 1
    fi
    say "installing system packages: $*"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_python() {
    if ! command -v "$PYTHON" >/dev/null; then
        apt_install python3 python3-venv python3-pip
    fi
    "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' || {
        say "codex-swarm needs Python 3.11 or newer"
        exit 1
    }
    if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
        apt_install python3-venv
    fi
}

ensure_project() {
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating $VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    say "installing codex-swarm and its dependencies into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
}

ensure_codex() {
    if [ -x "$CODEX_DIR/node_modules/.bin/codex" ] \
        && "$CODEX_DIR/node_modules/.bin/codex" --version 2>/dev/null | grep -q "$CODEX_VERSION"; then
        return
    fi
    if ! command -v npm >/dev/null; then
        apt_install nodejs npm
    fi
    say "installing the Codex CLI $CODEX_VERSION into $CODEX_DIR (about 400 MB)"
    npm install --no-save --no-audit --no-fund --loglevel=error --prefix "$CODEX_DIR" "@openai/codex@$CODEX_VERSION"
}

ensure_engine() {
    # The sandbox tests need Podman (with runc), bubblewrap and socat, and the runner image.
    local tool
    for tool in podman runc bwrap socat; do
        if ! command -v "$tool" >/dev/null; then
            apt_install podman runc bubblewrap socat
            break
        fi
    done
    say "ensuring the runner image (deploy/runner/build-local.sh)"
    deploy/runner/build-local.sh "$CODEX_DIR"
}

ensure_browser() {
    # The console's test drives a real headless Chromium.
    if ! command -v chromium-headless-shell >/dev/null && ! command -v chromium >/dev/null; then
        apt_install chromium-headless-shell
    fi
}

run_tests() {
    say "ruff"
    "$VENV/bin/ruff" check .
    "$VENV/bin/ruff" format --check .
    say "mypy --strict"
    "$VENV/bin/mypy"
    say "pytest"
    "$VENV/bin/pytest" "$@"
}

main() {
    local command=${1:-}
    shift || true
    case "$command" in
        up)
            ensure_python
            ensure_project
            ensure_codex
            ensure_engine || say "no container engine: runs will use a local sandbox"
            exec "$VENV/bin/swarm" up --demo "$@"
            ;;
        test)
            ensure_python
            ensure_project
            ensure_codex
            ensure_engine
            ensure_browser
            run_tests "$@"
            ;;
        *)
            echo "usage: ./bootstrap.sh up [ARGS...] | ./bootstrap.sh test [PYTEST ARGS...]" >&2
            exit 2
            ;;
    esac
}

main "$@"
