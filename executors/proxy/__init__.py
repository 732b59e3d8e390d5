"""The model proxy: the OpenAI-compatible endpoint the run executor serves to its sandboxes.

Each run gets its own unix socket (`<socket_dir>/<run_id>/model.sock`, the directory bind-mounted into
the run's sandbox) and a capability token that Codex sends as `Authorization: Bearer`. Requests under
`/v1/` are forwarded to the configured upstream with the upstream's key, which never enters a sandbox;
answers stream back unbuffered. Every call is reported (`ModelCall`: model, usage, latency, bodies), a
per-run token budget is enforced (`BudgetExceeded`, then 429s), and tool output showing that Codex's own
sandbox failed is reported (`SandboxBroken`).

    async with ModelProxy(Upstream("https://api.openai.com/v1", api_key=key), socket_dir) as proxy:
        grant = await proxy.open_run(run_id, max_tokens=200_000, on_report=publish)
        ...  # mount grant.socket's directory into the sandbox, pass grant.token as Codex's env_key
        await proxy.close_run(run_id)
"""

from executors.proxy._inspect import SIGNATURES
from executors.proxy._reports import (
    BadRunId,
    BudgetExceeded,
    Grant,
    ModelCall,
    OnReport,
    ProxyError,
    Report,
    RunAlreadyOpen,
    SandboxBroken,
    Upstream,
)
from executors.proxy._server import SOCKET_NAME, ModelProxy

__all__ = [
    "SIGNATURES",
    "SOCKET_NAME",
    "BadRunId",
    "BudgetExceeded",
    "Grant",
    "ModelCall",
    "ModelProxy",
    "OnReport",
    "ProxyError",
    "Report",
    "RunAlreadyOpen",
    "SandboxBroken",
    "Upstream",
]
