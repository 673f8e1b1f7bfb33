"""Routing's entrypoint in two phases, one process: `python -m routing.serve --host 0.0.0.0 --port 8003`.

1. The background half (routing.engine: migrations checked, outbox relay and consumer, seed, SLA timers) starts
   with only its own modules imported: a restarted process fires timers ~0.5 s of CPU sooner than when FastAPI, the
   routes and their models load first (1M open timers back in service after a SIGKILL, bench/results/timers.md).
2. Then the HTTP side is imported (FastAPI, the routes and their models; in a worker thread, so the event loop
   keeps firing timers meanwhile) and built (routing.app.create_app, handed the running engine), and uvicorn serves
   it: the same app, settings and lifespan as `uvicorn routing.app:create_app --factory`, whose shutdown stops the
   engine. `/readyz` answers once HTTP is up, as before.

SIGTERM or SIGINT before uvicorn serves stops the engine as the lifespan would, then ends the process by that signal
(uvicorn handles them from then on).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import signal
from collections.abc import Callable, Coroutine, Sequence
from types import FrameType
from typing import Any

import structlog

from common.logging import configure_logging
from routing.engine import Engine
from routing.settings import RoutingSettings

log = structlog.get_logger(__name__)
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


async def serve(settings: RoutingSettings, host: str, port: int, **uvicorn_options: Any) -> list[int]:
    """Run until stopped; the signals received before the HTTP side was up (to re-raise once stopped)."""
    received: list[int] = []

    def note(sig: int, _frame: FrameType | None) -> None:
        received.append(sig)

    engine = Engine(settings)
    previous = {sig: signal.signal(sig, note) for sig in _SIGNALS}
    try:
        try:
            await engine.start()
            for name in ("uvicorn", "routing.app"):  # the HTTP side, imported while the timers fire
                if not received:
                    await asyncio.to_thread(importlib.import_module, name)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if received:
            return received
        import uvicorn

        def app() -> Any:
            from routing.app import create_app

            return create_app(settings, engine=engine)

        config = uvicorn.Config(app, factory=True, host=host, port=port, **uvicorn_options)
        await uvicorn.Server(config).serve()
        return []
    finally:
        await engine.stop()  # done already if the lifespan ran; here if HTTP never came up


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m routing.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8003)
    # The few uvicorn options a deployment or the bench sets, with uvicorn's own names and defaults.
    parser.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto")
    parser.add_argument("--http", choices=("auto", "h11", "httptools"), default="auto")
    parser.add_argument("--no-access-log", dest="access_log", action="store_false")
    parser.add_argument("--log-level", choices=("critical", "error", "warning", "info", "debug", "trace"))
    args = parser.parse_args(argv)
    options = {"http": args.http, "access_log": args.access_log, "log_level": args.log_level}
    settings = RoutingSettings()
    configure_logging(settings.service_name, settings.log_level, settings.log_format)
    main_coroutine = serve(settings, args.host, args.port, **options)
    run: Callable[[Coroutine[Any, Any, list[int]]], list[int]] = asyncio.run
    if args.loop != "asyncio":
        with contextlib.suppress(ImportError):  # uvicorn[standard] installs it; uvicorn's "auto" loop would use it
            import uvloop

            run = uvloop.run
    received = run(main_coroutine)
    for sig in received[:1]:
        signal.raise_signal(sig)  # ended by the signal, as uvicorn ends after a signal it handled


if __name__ == "__main__":
    main()
