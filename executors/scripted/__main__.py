"""`python -m executors.scripted --port N`: serve the scripted model until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path

from executors.scripted.server import ScriptedModel


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m executors.scripted", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--scripts-dir", type=Path, default=None, help="default: the bundled scripts")
    parser.add_argument("--default-script", default="hello")
    parser.add_argument("--model", default="gpt-5.5")
    return parser.parse_args()


async def _serve(arguments: argparse.Namespace) -> None:
    server = ScriptedModel(
        scripts_dir=arguments.scripts_dir,
        default_script=arguments.default_script,
        host=arguments.host,
        port=arguments.port,
        model=arguments.model,
    )
    async with server:
        print(
            f"scripted model at {server.base_url} (scripts: {', '.join(sorted(server.scripts))})", flush=True
        )
        await asyncio.Event().wait()


def main() -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(_arguments()))


if __name__ == "__main__":
    main()
