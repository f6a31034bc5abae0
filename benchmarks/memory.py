"""Peak RSS of ``batcher run`` over large inputs: it must not grow with the input.

Cases, each at 100,000 and 1,000,000 jobs:
  run-jsonl / run-parquet   read and check every job, then send for --seconds against the mock
                            provider (its own process, no latency), then SIGINT;
  run-s3                    run-parquet's file read from an S3-compatible server on loopback
                            (moto's, as the tests start it): s3://bench/jobs-N.parquet, streamed
                            a row group at a time through pyarrow's S3 filesystem;
  resume                    every job already finished (results synthesised): the rerun loads
                            the done-set, checks every job against it and has nothing to send;
  quota-wait                --rpd 100 spent at once, the run waits for the reset with every
                            other job queued, then SIGINT;
  run-images                every job sends an image (one of 100 files of about 200 KB each, by
                            path): the scan checks every ref, each job reads its image when it is
                            sent; for --seconds, then SIGINT;
  gen-images                --endpoint images: every job answers an image saved under DIR/images/;
                            for --seconds, then SIGINT;
  batch                     --mode batch against the mock's instant batches (answered at their
                            first look), to its end: every job cut into files, uploaded, its
                            batch created, and the answers collected. Besides the peak, the jobs
                            prepared and uploaded a second (from the start of the process to the
                            last batch created) and the answers collected a second (each batch's
                            collection, from the look that found it finished to its close in
                            DIR/batches.jsonl).

and the readers of a finished run of that many jobs (written straight to Parquet by
tests/synthetic_run.py: three models over a pool of two endpoints, retries, errors of each kind,
hours of finishes), each to its end, with its wall and CPU time (start-up included; on a busy
machine the CPU time is the steadier figure) and the report's size:
  report                    batcher report DIR;
  status                    batcher status DIR (with an empty in-memory quota store);
  show                      batcher show DIR (the first 20 rows in input order, of all of them).

    python benchmarks/memory.py [--seconds 20] [--sizes 100000,1000000] [--cases run-images,...]
    python benchmarks/memory.py --sizes 100000,500000,1000000 --cases report,status,show
    python benchmarks/memory.py --sizes 100000,1000000 --cases batch
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import mock_process

sys.path.append(str(Path(__file__).resolve().parents[1]))  # tests/synthetic_run.py, s3_server.py

from tests.s3_server import s3_server

# The child's own peak (VmHWM, in KiB: getrusage's ru_maxrss would carry this process's peak
# into the child across fork and exec, and this one holds the inputs it wrote) and CPU seconds.
_WRAPPER = (
    "import resource, sys\n"
    "from batcher._cli.main import main\n"
    "code = main(sys.argv[2:])\n"
    "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]\n"
    "use = resource.getrusage(resource.RUSAGE_SELF)\n"
    "open(sys.argv[1], 'w').write(f'{hwm} {use.ru_utime + use.ru_stime}')\n"
    "sys.exit(code)\n"
)


def write_inputs(folder: Path, n: int) -> tuple[Path, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    jsonl = folder / f"jobs-{n}.jsonl"
    with jsonl.open("w") as f:
        for i in range(n):
            f.write(
                json.dumps(
                    {
                        "id": f"job-{i:07d}",
                        "prompt": f"Summarise item {i} briefly.",
                        "model": "bench-model",
                    }
                )
                + "\n"
            )
    parquet = folder / f"jobs-{n}.parquet"
    with pq.ParquetWriter(
        parquet, pa.schema([("id", pa.string()), ("prompt", pa.string()), ("model", pa.string())])
    ) as w:
        for start in range(0, n, 50_000):
            ids = [f"job-{i:07d}" for i in range(start, min(n, start + 50_000))]
            w.write_table(
                pa.table(
                    {
                        "id": ids,
                        "prompt": [
                            f"Summarise item {i[4:].lstrip('0') or '0'} briefly." for i in ids
                        ],
                        "model": ["bench-model"] * len(ids),
                    }
                )
            )
    return jsonl, parquet


def noisy_png(seed: int, width: int = 256, height: int = 256) -> bytes:
    """A PNG of random pixels (it does not compress: about 3 bytes a pixel)."""
    import random
    import struct
    import zlib

    rng = random.Random(seed)
    rows = b"".join(b"\x00" + rng.randbytes(3 * width) for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 1)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def write_image_inputs(folder: Path, n: int) -> tuple[Path, Path]:
    """``n`` jobs each sending one of 100 image files by relative path; ``n`` prompts to draw."""
    pics = folder / "pics"
    if not pics.is_dir():
        pics.mkdir()
        for k in range(100):
            (pics / f"p{k:03d}.png").write_bytes(noisy_png(k))
    jobs = folder / f"image-jobs-{n}.jsonl"
    draw = folder / f"draw-jobs-{n}.jsonl"
    with jobs.open("w") as f, draw.open("w") as g:
        for i in range(n):
            job = {"id": f"job-{i:07d}", "prompt": "Caption this.", "model": "bench-model"}
            f.write(json.dumps({**job, "images": [f"pics/p{i % 100:03d}.png"]}) + "\n")
            g.write(json.dumps({**job, "prompt": f"Draw item {i}."}) + "\n")
    return jobs, draw


def synthesise_results(out: Path, jsonl: Path, base_url: str) -> None:
    """A finished run of every job in ``jsonl``, written as the store writes it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from batcher._jobs import JobSource
    from batcher._rundir.rows import result_schema
    from batcher._wire.providers import fingerprint, get_provider

    provider = get_provider("openai")
    (out / "results").mkdir(parents=True)
    rows: list[dict[str, object]] = []
    seq = 0

    def flush() -> None:
        nonlocal seq, rows
        seq += 1
        pq.write_table(
            pa.Table.from_pylist(rows, schema=result_schema()),
            out / "results" / f"part-{seq:06d}.parquet",
        )
        rows = []

    for job in JobSource([jsonl]):
        spec = provider.build(job, "bench-model")
        rows.append(
            {
                "id": job.id,
                "status": "ok",
                "text": "done",
                "attempts": 1,
                "fingerprint": fingerprint(provider, "bench-model", spec),
            }
        )
        if len(rows) == 5000:
            flush()
    if rows:
        flush()
    (out / "run.json").write_text(
        json.dumps({"provider": "openai", "model": None, "base_url": base_url, "total": 0})
    )


def report(case: str, n: int, rss: float, out: Path) -> None:
    """One line of the table: the case, its jobs, its peak RSS and how many jobs it finished
    (so a case cut off before it sent anything shows as such)."""
    from batcher._rundir.results import read_results

    done = sum(read_results(out).get(k, 0) for k in ("ok", "error"))
    print(f"{case:14} {n:9,} {rss:13.1f} {done:9,}", flush=True)


def peak_rss_mib(
    args: list[str], seconds: float | None, env: dict[str, str] | None = None
) -> float:
    """Run ``batcher ARGS``; SIGINT it after ``seconds`` (if given); return its peak RSS in MiB."""
    return measured(args, seconds, env)[0]


def measured(
    args: list[str], seconds: float | None, extra_env: dict[str, str] | None = None
) -> tuple[float, float, float, int]:
    """Run ``batcher ARGS`` (with ``extra_env``); SIGINT it after ``seconds`` (if given); return
    its peak RSS in MiB, its wall time and CPU time in seconds (start-up included) and its exit
    code."""
    with (
        tempfile.NamedTemporaryFile("r", suffix=".rss") as rss,
        tempfile.TemporaryFile("w+") as err,
    ):
        t0 = time.perf_counter()
        env = {**os.environ, "BENCH_KEY": "k", **(extra_env or {})}
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRAPPER, rss.name, *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        if seconds is not None:
            deadline = time.monotonic() + seconds
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        proc.wait(1800)
        wall = time.perf_counter() - t0
        if proc.returncode not in (0, -signal.SIGINT, 130):
            err.seek(0)
            print(f"batcher {' '.join(args)} exited {proc.returncode}:", file=sys.stderr)
            print("".join(err.readlines()[-15:]), file=sys.stderr)
        hwm, cpu = (Path(rss.name).read_text() or "0 nan").split()
        return int(hwm) / 1024, wall, float(cpu), proc.returncode


READ_CASES = ("report", "status", "show")


def read_cases(folder: Path, n: int, cases: set[str]) -> None:
    """Write a finished run of ``n`` jobs, then measure each reader of it that ``cases`` names."""
    from tests.synthetic_run import write_run

    out = folder / f"run-{n}"
    write_run(out, n)
    html = folder / f"report-{n}.html"
    for case in READ_CASES:
        if case not in cases:
            continue
        args = {
            "report": ["report", str(out), "-o", str(html)],
            "status": ["status", str(out), "--quota-store", "memory"],
            "show": ["show", str(out)],
        }[case]
        rss, wall, cpu, code = measured(args, None)
        if code != 0:
            raise RuntimeError(f"batcher {' '.join(args)} exited {code}")
        size = f"{html.stat().st_size / 1e6:.2f}" if case == "report" else "-"
        print(f"{case:14} {n:9,} {rss:13.1f} {wall:8.2f} {cpu:8.2f} {size:>8}", flush=True)


def batch_rates(out: Path, start: float, n: int) -> tuple[float, float]:
    """Jobs prepared and uploaded a second (from ``start``, the process's start by the wall
    clock, to the last batch created) and answers collected a second (summed over the batches,
    from the look that found each finished to its close), read from ``DIR/batches.jsonl``."""
    created = 0.0
    finished: dict[str, float] = {}
    collecting = 0.0
    with (out / "batches.jsonl").open("rb") as f:
        for line in f:
            event = json.loads(line)
            kind = event.get("event")
            if kind == "submitted":
                created = max(created, event["at"])
            elif kind == "state" and event["state"] in ("completed", "expired", "cancelled"):
                finished.setdefault(event["tag"], event["at"])
            elif kind == "closed" and event["tag"] in finished:
                collecting += event["at"] - finished[event["tag"]]
    return n / max(created - start, 1e-9), n / max(collecting, 1e-9)


def batch_case(folder: Path, n: int, jsonl: Path, common: list[str]) -> None:
    """``--mode batch`` of ``n`` jobs to its end against the mock's instant batches."""
    out = folder / f"out-batch-{n}"
    args = ["run", str(jsonl), "--out", str(out), "--mode", "batch", "--poll-interval", "1s"]
    start = time.time()
    rss, wall, cpu, code = measured([*args, *common], None)
    if code != 0:
        raise RuntimeError(f"batcher {' '.join(args)} exited {code}")
    from batcher._rundir.results import read_results

    up, down = batch_rates(out, start, n)
    done = sum(read_results(out).get(k, 0) for k in ("ok", "error"))
    line = f"{'batch':14} {n:9,} {rss:13.1f} {wall:8.1f} {cpu:8.1f} {up:11,.0f} {down:11,.0f}"
    print(f"{line} {done:9,}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument(
        "--cases", default="run-jsonl,run-parquet,resume,quota-wait,run-images,gen-images"
    )
    opts = ap.parse_args()
    sizes = [int(s) for s in opts.sizes.split(",")]
    cases = set(opts.cases.split(","))
    runs = cases - set(READ_CASES) - {"batch"}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if runs:
            run_cases(folder, sizes, cases, opts.seconds)
        if "batch" in cases:
            batch_cases(folder, sizes)
        if cases & set(READ_CASES):
            head = f"{'case':14} {'jobs':>9} {'peak RSS MiB':>13} {'wall s':>8} {'CPU s':>8}"
            print(f"{head} {'HTML MB':>8}", flush=True)
            for n in sizes:
                read_cases(folder, n, cases)


def batch_cases(folder: Path, sizes: list[int]) -> None:
    """The ``--mode batch`` case at each size, against the mock in its own process."""
    head = f"{'case':14} {'jobs':>9} {'peak RSS MiB':>13} {'wall s':>8} {'CPU s':>8}"
    print(f"{head} {'uploaded/s':>11} {'collected/s':>11} {'finished':>9}", flush=True)
    with mock_process() as url:
        common = ["--base-url", f"{url}/v1", "--api-key-env", "BENCH_KEY", "--no-progress"]
        for n in sizes:
            jsonl, _ = write_inputs(folder, n)
            batch_case(folder, n, jsonl, common)


def run_cases(folder: Path, sizes: list[int], cases: set[str], seconds: float) -> None:
    """The cases of ``batcher run``, against the mock in its own process."""
    print(f"{'case':14} {'jobs':>9} {'peak RSS MiB':>13} {'finished':>9}", flush=True)
    with contextlib.ExitStack() as stack:
        s3 = stack.enter_context(s3_server()) if "run-s3" in cases else None
        if s3 is not None:
            s3.bucket("bench")
        _run_cases(folder, sizes, cases, seconds, s3)


def _run_cases(folder: Path, sizes: list[int], cases: set[str], seconds: float, s3: Any) -> None:
    with mock_process() as url:
        base = f"{url}/v1"
        common = [
            "--base-url",
            base,
            "--api-key-env",
            "BENCH_KEY",
            "--no-progress",
            "--max-concurrency",
            "32",
        ]
        for n in sizes:
            jsonl, parquet = write_inputs(folder, n)
            for name, path in (("run-jsonl", jsonl), ("run-parquet", parquet)):
                if name in cases:
                    out = folder / f"out-{name}-{n}"
                    rss = peak_rss_mib(["run", str(path), "--out", str(out), *common], seconds)
                    report(name, n, rss, out)
            if s3 is not None:
                s3.client.upload_file(str(parquet), "bench", parquet.name)
                out = folder / f"out-run-s3-{n}"
                args = ["run", f"s3://bench/{parquet.name}", "--out", str(out), *common]
                rss = peak_rss_mib(args, seconds, s3.env)
                report("run-s3", n, rss, out)
            if "resume" in cases:
                out = folder / f"out-resume-{n}"
                synthesise_results(out, jsonl, base)
                rss = peak_rss_mib(["run", str(jsonl), "--out", str(out), *common], None)
                report("resume", n, rss, out)
            if "quota-wait" in cases:
                out = folder / f"out-wait-{n}"
                rss = peak_rss_mib(
                    ["run", str(jsonl), "--out", str(out), "--rpd", "100", *common], seconds
                )
                report("quota-wait", n, rss, out)
            images, draw = write_image_inputs(folder, n)
            if "run-images" in cases:
                out = folder / f"out-images-{n}"
                rss = peak_rss_mib(["run", str(images), "--out", str(out), *common], seconds)
                report("run-images", n, rss, out)
            if "gen-images" in cases:
                out = folder / f"out-gen-{n}"
                args = ["run", str(draw), "--out", str(out), "--endpoint", "images", *common]
                rss = peak_rss_mib(args, seconds)
                report("gen-images", n, rss, out)


if __name__ == "__main__":
    main()
