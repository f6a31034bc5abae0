"""Bytes sent for 1,000 jobs sharing 10 PDFs: each file uploaded once (``--upload auto``) against
every job carrying its file inline (``--upload never``), side by side in one run.

Each case is ``batcher run`` in this process against an in-process mock provider (no rate limits,
no latency) whose request handler counts the bytes of every request body it receives: the chat
requests, and the uploads to ``/files`` (or Gemini's upload). The figure is the bytes of each
case and their ratio, per provider.

    python benchmarks/uploads.py [--jobs 1000] [--files 10] [--size-kb 500]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batcher._cli.main import main
from batcher.mock import MockServer
from batcher.mock._wire import Request, Response


def _inputs(folder: Path, jobs: int, files: int, size: int) -> Path:
    """``files`` distinct PDFs of ``size`` bytes and ``jobs`` jobs asking about them in turn."""
    for i in range(files):
        head = f"%PDF-1.4\n%{i}\n".encode()
        (folder / f"doc{i}.pdf").write_bytes(head + os.urandom(size - len(head)))
    path = folder / "jobs.jsonl"
    with path.open("w") as f:
        for j in range(jobs):
            row = {"id": f"j{j}", "prompt": f"question {j}", "files": [f"doc{j % files}.pdf"]}
            f.write(json.dumps(row) + "\n")
    return path


def one(provider: str, model: str, jobs: Path, out: Path, upload: str) -> int:
    """The request bytes the mock received for one run."""
    server = MockServer()
    pipeline = server._pipeline
    handle = pipeline.handle
    received = [0]

    async def counting(request: Request) -> Response:
        received[0] += len(request.body)
        return await handle(request)

    pipeline.handle = counting  # type: ignore[method-assign]  # before the server takes it
    server.start()
    try:
        os.environ.setdefault("OPENAI_API_KEY", "sk-bench")
        os.environ.setdefault("GEMINI_API_KEY", "bench")
        argv = ["run", str(jobs), "--out", str(out), "--provider", provider, "--no-progress"]
        argv += ["--base-url", server.base_url(provider), "--model", model, "--upload", upload]
        argv += ["--rpm", "1000000", "--tpm", "1000000000"]
        code = main(argv)
        if code != 0:
            raise SystemExit(f"{provider} --upload {upload}: exit {code}")
    finally:
        server.stop()
    return received[0]


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--size-kb", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        jobs = _inputs(folder, args.jobs, args.files, args.size_kb * 1024)
        print(f"{'case':<26}{'inline (never)':>18}{'uploaded (auto)':>18}{'ratio':>8}")
        for provider, model in (("openai", "gpt-4o"), ("gemini", "gemini-2.5-flash")):
            inline = one(provider, model, jobs, folder / f"{provider}-never", "never")
            auto = one(provider, model, jobs, folder / f"{provider}-auto", "auto")
            name = f"{provider} {args.jobs} jobs/{args.files} PDFs"
            print(f"{name:<26}{inline:>18,}{auto:>18,}{inline / auto:>8.1f}")


if __name__ == "__main__":
    run()
