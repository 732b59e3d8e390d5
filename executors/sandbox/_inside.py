"""What every isolating sandbox shares: the entry script, the agent user, and handing paths over to it.

The entry script runs as `sh -c ENTRY swarm-sandbox PORT SOCKET COMMAND...` inside the sandbox. It
starts the model forwarder (socat: 127.0.0.1:PORT to the unix socket SOCKET), waits until it listens,
runs COMMAND as a child and passes SIGTERM/SIGINT/SIGHUP on to it (the entry script may be PID 1, which
ignores signals it has no handler for), and exits with COMMAND's status. When COMMAND was killed and the
sandbox's memory cgroup counted an OOM kill, it writes `OOM_MARKER` on stderr. Podman 4.3 never reports
`OOMKilled`: conmon 2.1.6 writes its `oom` flag file into its working directory instead of the
container's, where podman does not look. The kernel's counter is read instead.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from executors.sandbox.base import Spec

AGENT_UID = AGENT_GID = 1000  # the runner image's `agent`; also the bubblewrap user when we are root
MODEL_DIR = "/run/model-proxy"  # where the model socket's directory appears inside
TMP = "/tmp"  # noqa: S108  # the sandbox's own tmpfs, not the host's
HOME = "/home/agent"  # a tmpfs too: the root file system is read-only
OOM_MARKER = "swarm-sandbox: oom_kill"
FORWARDER_FAILED = 125

ENTRY = f"""\
trap 'exit 143' TERM INT HUP
port=$1 socket=$2
shift 2
socat "TCP-LISTEN:$port,bind=127.0.0.1,fork,reuseaddr" "UNIX-CONNECT:$socket" &
listening=$(printf ': 0100007F:%04X 00000000:0000 0A' "$port")
tries=0
until grep -q "$listening" /proc/net/tcp; do
    tries=$((tries + 1))
    if [ "$tries" -gt 1000 ]; then
        echo "swarm-sandbox: the model forwarder is not listening on 127.0.0.1:$port" >&2
        exit {FORWARDER_FAILED}
    fi
    sleep 0.01
done
# A signal between starting the command and knowing its pid is kept and forwarded, not lost.
term=
trap 'term=1' TERM INT HUP
"$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT HUP
if [ -n "$term" ]; then kill -TERM "$child" 2>/dev/null; fi
# Wait at least once: a command that has already ended (and been reaped) still reports its status.
wait "$child"; status=$?
while kill -0 "$child" 2>/dev/null; do wait "$child"; status=$?; done
if [ "$status" -eq 137 ] && grep -qs '^oom_kill [1-9]' \\
        /sys/fs/cgroup/memory/memory.oom_control /sys/fs/cgroup/memory.events; then
    echo "{OOM_MARKER}" >&2
fi
exit "$status"
"""


def entry_command(spec: Spec) -> list[str]:
    """The argv that runs `spec.command` behind the model forwarder, inside the sandbox."""
    socket = f"{MODEL_DIR}/{spec.model_socket.name}"
    return ["sh", "-c", ENTRY, "swarm-sandbox", str(spec.model_port), socket, *spec.command]


def check_socket(spec: Spec) -> str | None:
    """Why the model socket cannot be handed to a sandbox, or None when it can.

    When we are root the sandbox runs as the agent user, who must be able to enter the socket's
    directory and connect (the model proxy makes them 0755 and 0666).
    """
    try:
        info = spec.model_socket.stat()
    except OSError as exc:
        return f"the model socket {spec.model_socket} is missing: {exc.strerror}"
    if not stat.S_ISSOCK(info.st_mode):
        return f"{spec.model_socket} is not a unix socket"
    if os.geteuid() == 0 and not _agent_may(info, stat.S_IWOTH):
        return f"uid {AGENT_UID} cannot connect to {spec.model_socket}: make it 0666"
    if os.geteuid() == 0 and not _agent_may(spec.model_socket.parent.stat(), stat.S_IXOTH):
        return f"uid {AGENT_UID} cannot enter {spec.model_socket.parent}: make it 0755"
    return None


def _agent_may(info: os.stat_result, other_bit: int) -> bool:
    return info.st_uid == AGENT_UID or bool(info.st_mode & other_bit)


def hand_over(spec: Spec) -> None:
    """When we are root, give the workspace and CODEX_HOME (recursively) to the agent user.

    Blocking (walks the workspace): call it in a thread.
    """
    if os.geteuid() == 0:
        for root in (spec.workspace, spec.codex_home):
            _chown_tree(root)


def _chown_tree(root: Path) -> None:
    os.chown(root, AGENT_UID, AGENT_GID)
    for directory, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            path = os.path.join(directory, name)
            if os.lstat(path).st_uid != AGENT_UID:
                os.lchown(path, AGENT_UID, AGENT_GID)


def unsearchable(path: Path, uid: int, gid: int) -> Path | None:
    """The first directory from / down to `path` that `uid`/`gid` may not enter (ACLs ignored)."""
    for directory in (*reversed(path.parents), path):
        info = directory.stat()
        if info.st_uid == uid:
            bit = stat.S_IXUSR
        elif info.st_gid == gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return directory
    return None
