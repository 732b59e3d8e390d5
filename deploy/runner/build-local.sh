#!/usr/bin/env bash
# Builds the runner image with no image registry: a minimal Debian rootfs made with mmdebstrap from the
# apt mirror, imported into podman, then the pinned Codex CLI copied in from its npm install. The result
# matches deploy/runner/Dockerfile (same packages, user, paths and environment).
#
#   deploy/runner/build-local.sh [CODEX_DIR [IMAGE]]
#
# CODEX_DIR is the npm prefix of the CLI (default .codex-cli), IMAGE the tag (default
# localhost/codex-swarm-runner:0.169.0). Environment: DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR, FORCE=1 to rebuild. Idempotent: an image whose `swarm.inputs` label matches the hash of this script and
# the CLI files is left alone (well under a second).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CODEX_VERSION=0.169.0
IMAGE=${2:-localhost/codex-swarm-runner:$CODEX_VERSION}
BASE=localhost/codex-swarm-runner-base:bookworm
CODEX_DIR=$(cd "${1:-${CODEX_DIR:-$ROOT/.codex-cli}}" && pwd)
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
PACKAGES=bash,ca-certificates,coreutils,git,passwd,socat
# No documentation, manuals, translations or lintian data; licences stay.
DPKG_EXCLUDES=(
    'path-exclude=/usr/share/doc/*' 'path-include=/usr/share/doc/*/copyright'
    'path-exclude=/usr/share/man/*' 'path-exclude=/usr/share/info/*'
    'path-exclude=/usr/share/locale/*' 'path-exclude=/usr/share/lintian/*'
)

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
podman() { command podman --runtime runc "$@"; }

vendor_dir() {
    local arch
    case "$(uname -m)" in
        x86_64) arch=x64/vendor/x86_64-unknown-linux-musl ;;
        aarch64) arch=arm64/vendor/aarch64-unknown-linux-musl ;;
        *) say "no Codex CLI build for $(uname -m)"; exit 1 ;;
    esac
    local dir=$CODEX_DIR/node_modules/@openai/codex-linux-$arch
    if [ ! -x "$dir/bin/codex" ]; then
        say "no Codex CLI in $CODEX_DIR: npm install --prefix $CODEX_DIR @openai/codex@$CODEX_VERSION"
        exit 1
    fi
    echo "$dir"
}

label_of() {  # the value of label $2 on image $1, empty when the image is missing
    podman image inspect --format "{{ index .Labels \"$2\" }}" "$1" 2>/dev/null || true
}

base_hash() {
    printf '%s\n' bookworm "$PACKAGES" "${DPKG_EXCLUDES[@]}" "$DEBIAN_MIRROR" "$DEBIAN_SECURITY_MIRROR" \
        | sha256sum | cut -c1-16
}

inputs_hash() {  # this script (it holds the Containerfile) and the identity of the copied CLI files
    local vendor=$1
    {
        cat "$0"
        cat "$vendor/codex-package.json"
        stat -c '%n %s' "$vendor/bin/codex" "$vendor/codex-resources/bwrap" "$vendor/codex-path/rg"
    } | sha256sum | cut -c1-16
}

build_base() {
    local work=$1 hash
    hash=$(base_hash)
    if [ "$(label_of "$BASE" swarm.base)" = "$hash" ]; then
        return
    fi
    command -v mmdebstrap >/dev/null || {
        say "installing mmdebstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null
    }
    say "building the Debian bookworm rootfs ($PACKAGES)"
    local opts=() exclude
    for exclude in "${DPKG_EXCLUDES[@]}"; do opts+=(--dpkgopt="$exclude"); done
    mmdebstrap --quiet --variant=essential --include="$PACKAGES" "${opts[@]}" \
        --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/log/*' \
        bookworm "$work/rootfs.tar" \
        "deb $DEBIAN_MIRROR bookworm main" "deb $DEBIAN_MIRROR bookworm-updates main" \
        "deb $DEBIAN_SECURITY_MIRROR bookworm-security main"
    podman import --quiet --change "LABEL swarm.base=$hash" "$work/rootfs.tar" "$BASE" >/dev/null
    rm -f "$work/rootfs.tar"
}

write_containerfile() {
    cat >"$1/Containerfile" <<EOF
FROM $BASE
COPY codex /opt/codex
RUN ln -s /opt/codex/bin/codex /usr/local/bin/codex \\
 && useradd --uid 1000 --user-group --create-home --shell /bin/bash agent \\
 && mkdir -p /workspace /codex-home \\
 && chown agent:agent /workspace /codex-home
ENV PATH=/usr/local/bin:/opt/codex/codex-path:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \\
    CODEX_HOME=/codex-home
USER agent
WORKDIR /workspace
LABEL org.opencontainers.image.title=codex-swarm-runner \\
      swarm.codex-version=$CODEX_VERSION \\
      swarm.inputs=$2
EOF
}

stage_codex() {  # hard links where the file system allows: the CLI is ~300 MB
    local vendor=$1 dest=$2/codex
    mkdir -p "$dest/bin" "$dest/codex-resources" "$dest/codex-path"
    cp -l "$vendor/bin/codex" "$dest/bin/" 2>/dev/null || cp "$vendor/bin/codex" "$dest/bin/"
    cp "$vendor/codex-resources/bwrap" "$dest/codex-resources/"
    cp "$vendor/codex-path/rg" "$dest/codex-path/"
    cp "$vendor/codex-package.json" "$dest/"
}

main() {
    local vendor hash work
    vendor=$(vendor_dir)
    hash=$(inputs_hash "$vendor")
    if [ -z "${FORCE:-}" ] && [ "$(label_of "$IMAGE" swarm.inputs)" = "$hash" ]; then
        say "$IMAGE is up to date ($hash)"
        return
    fi
    work=$(mktemp -d "${TMPDIR:-/tmp}/runner-build.XXXXXX")
    trap "rm -rf '$work'" EXIT
    build_base "$work"
    stage_codex "$vendor" "$work"
    write_containerfile "$work" "$hash"
    say "building $IMAGE"
    podman build --quiet --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
        --tag "$IMAGE" "$work" >/dev/null
    say "built $IMAGE ($hash)"
}

main
