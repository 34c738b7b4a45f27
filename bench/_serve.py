"""Serve an ASGI app with uvicorn on a listening TCP socket inherited from the parent.

    python bench/_serve.py TARGET FD [--factory]

Not ``uvicorn --fd``: it wraps the descriptor as a Unix socket, so asyncio never sets
TCP_NODELAY on the connections and every small response split in two writes waits
about 40 ms for a delayed ACK. Here the socket is wrapped as what it is.
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

import uvicorn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="module:attribute, found in bench/")
    parser.add_argument("fd", type=int)
    parser.add_argument("--factory", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    config = uvicorn.Config(
        args.target, factory=args.factory, log_level="warning", access_log=False
    )
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=args.fd)])


if __name__ == "__main__":
    main()
