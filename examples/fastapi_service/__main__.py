"""`python -m examples.fastapi_service [--port 8000]`: the example service under uvicorn, memory store."""

from __future__ import annotations

import argparse

import uvicorn

from examples.fastapi_service.app import app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.fastapi_service", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
