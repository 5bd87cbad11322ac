"""Serve a GGUF model on 127.0.0.1 with llama.cpp's own server (the ``xllamacpp`` wheel).

Why this engine: ``llama-cpp-python`` has no Linux wheel on PyPI and its default native build
dies with SIGILL on CPUs with AMX (GCC 12 miscompiles the AMX tile configuration); xllamacpp
is llama.cpp's C++ server prebuilt for AVX2, installs in seconds and serves the OpenAI chat
API with first-token logprobs (docs/explain.md). The server runs in a child process, so a
crash in native code cannot take the caller down, and it is stopped when the context exits.

``python -m sparselens.interpretation.llm.server MODEL.gguf --port P`` runs it in the
foreground.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from sparselens.interpretation.llm.openai_client import OpenAIClient


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalServer:
    """``with LocalServer(gguf) as server: server.client()``: an OpenAI-compatible endpoint
    for `gguf` on 127.0.0.1, alive for the duration of the block."""

    def __init__(self, gguf: str | os.PathLike, *, port: int | None = None, n_ctx: int = 4096,
                 threads: int = 2, slots: int = 1, startup_timeout: float = 300.0,
                 log: str | os.PathLike | None = None) -> None:
        self.gguf = Path(gguf)
        if not self.gguf.is_file():
            raise FileNotFoundError(f"model file {self.gguf} does not exist")
        self.port = port or free_port()
        self.n_ctx, self.threads, self.startup_timeout = n_ctx, threads, startup_timeout
        self.slots = slots
        """Requests the server decodes together (llama.cpp's parallel slots, each with its
        own share of the context and its own prompt cache)."""
        self.log = Path(log) if log else None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def identity(self) -> str:
        """The cache identity: the model file's name and size (the server is deterministic
        at temperature 0 for a given file)."""
        return f"gguf:{self.gguf.name}:{self.gguf.stat().st_size}"

    def client(self, **options: object) -> OpenAIClient:
        """A client for this server; by default one request in flight per slot plus one
        waiting, so the server never idles between answers."""
        options.setdefault("concurrency", self.slots + 1)
        return OpenAIClient(self.base_url, model="local", identity=self.identity(),
                            **options)  # type: ignore[arg-type]

    def start(self) -> LocalServer:
        try:
            import xllamacpp  # noqa: F401
        except ImportError:
            raise RuntimeError("the local LLM server needs the xllamacpp package: "
                               "pip install 'sparselens[explain]' (or pip install xllamacpp)"
                               ) from None
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
        if self.log:
            self.log.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        cmd = [sys.executable, "-m", "sparselens.interpretation.llm.server", str(self.gguf),
               "--port", str(self.port), "--n-ctx", str(self.n_ctx),
               "--threads", str(self.threads), "--slots", str(self.slots)]
        self.process = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the LLM server for {self.gguf} exited with code "
                                   f"{self.process.returncode} while starting"
                                   + (f"; see {self.log}" if self.log else ""))
            if _healthy(self.port):
                return self
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"the LLM server for {self.gguf} did not come up within "
                           f"{self.startup_timeout:.0f} s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


def serve(gguf: str, port: int, n_ctx: int, threads: int, host: str = "127.0.0.1",
          slots: int = 1) -> None:
    """Run the server in this process until SIGTERM/SIGINT."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = gguf
    params.n_ctx = n_ctx * slots  # llama.cpp splits the context between the slots
    params.n_parallel = slots
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.hostnames = [host]
    params.port = port
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    parent = os.getppid()

    def orphaned() -> None:  # the caller was killed without stopping us: stop too
        while not stop.wait(2.0):
            if os.getppid() != parent:
                stop.set()

    threading.Thread(target=orphaned, daemon=True).start()
    server = xllamacpp.Server(params)
    stop.wait()
    del server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a GGUF model (OpenAI API) locally.")
    parser.add_argument("gguf")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--slots", type=int, default=1)
    args = parser.parse_args(argv)
    serve(args.gguf, args.port, args.n_ctx, args.threads, args.host, args.slots)


if __name__ == "__main__":
    main()
