"""``python -m benchmarks COMMAND [OPTIONS]``: one entry point for every benchmark.

Each command compares runserver_plus with its peers in the same run and
prints ratios (see benchmarks/README.rst); ``python -m benchmarks COMMAND
--help`` lists a command's options.
"""

from __future__ import annotations

import importlib
import sys

#: Command name -> (module, what it measures).
COMMANDS = {
    "server": ("run", "the HTTP server: keep-alive, static files, HTTPS"),
    "reload": ("reload", "the reloader: saves, warm restarts, idle cost"),
    "livereload": ("livereload", "the browser: CSS swaps and page reloads"),
    "soak": ("soak", "keep-alive clients through reloads: nothing lost"),
    "bounds": ("bounds", "how near the in-process ceiling any server gets"),
    "startup": ("reload_startup", "where a cold start's time goes"),
    "warm-designs": ("warm_designs", "fork or spare: the warm process's design"),
    "asgi": ("asgi", "ASGI mode against Daphne's runserver and uvicorn"),
}


def usage() -> str:
    lines = ["usage: python -m benchmarks COMMAND [OPTIONS]", "", "commands:"]
    lines += [f"  {name:13} {what}" for name, (_, what) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(usage(), file=sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    module = importlib.import_module(f"benchmarks.{COMMANDS[argv[0]][0]}")
    sys.argv[0] = f"python -m benchmarks {argv[0]}"
    code: int = module.main(argv[1:])
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
