"""The job source: files or Python objects as a stream of jobs, checked in full before any is sent.

``JobSource.scan`` is the first pass: it parses every row, checks each job against the provider and
looks for duplicate ids, and raises one ``InputError`` naming every problem. Iterating is the
second pass, which the run sends from. Neither pass holds all the jobs: files are streamed, and the
duplicate check keeps 8 bytes a job (a 64-bit hash of its id), reading the inputs once more, to name
the lines, only if two hashes repeat.
"""

from __future__ import annotations

import logging
from array import array
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeAlias

from .._core.errors import InputError, InputProblem, UsageError
from .._core.idset import duplicates, id_hash
from .._core.media import INLINE_LIMIT, media_problem, probe, uploadable
from .._core.stores import is_url
from ._columns import ColumnOptions
from ._fields import Base
from ._formats import parse_row
from ._frames import FrameInput, as_frame
from ._model import TASK_TYPES, Job, ProviderName
from ._readers import BadRow, Row, check_footers, check_paths, frame_rows, iter_rows
from ._remote import RemoteFile, expand

__all__ = ["JobSource"]

log = logging.getLogger("batcher")

_MAX_PROBLEMS = 20
"""How many input problems one error lists in full before it only counts the rest."""

_Item: TypeAlias = Job | Row | BadRow
"""A Python job, a row to parse, or a row's problem."""


class JobSource:
    """Jobs from files (local paths or URLs, streamed, read once to check and once to send), from a
    table or data frame (read a record batch at a time, as a Parquet file) or from Python objects.

    Every job it yields has its model: the row's own, else ``default_model``. A Python iterable is
    read once into a list, since a generator cannot be read twice. ``served`` is every model the
    run's endpoints serve (a pool's), if they do not serve any: a job of another is a problem.
    """

    def __init__(
        self,
        jobs: str | Path | Iterable[str | Path] | Iterable[Job | Mapping[str, Any]] | Any,
        columns: ColumnOptions | None = None,
        *,
        provider: ProviderName = "openai",
        default_model: str | None = None,
        endpoint: str = "chat",
        defaults: Mapping[str, Any] | None = None,
        served: Collection[str] | None = None,
        upload: bool = False,
    ) -> None:
        self.columns = columns or ColumnOptions()
        self.served = served
        self.upload = upload
        """Files over the inline limit may go through the provider's Files API (``--upload``)."""
        self.provider = provider
        self.default_model = default_model
        self.endpoint = endpoint
        # Job fields a job that leaves them unset takes (modalities, n, size, quality)
        self.defaults = {k: v for k, v in (defaults or {}).items() if v not in (None, ())}

        self._named: list[str | Path] = []
        """The files as given: paths, and URLs (a glob's files are listed on first use)."""
        self._files: list[Path | RemoteFile] | None = None
        self._items: list[Job | Mapping[str, Any]] = []
        self.frame: FrameInput | None = None
        if isinstance(jobs, str | Path):
            self._named = [_named(jobs)]
        elif (frame := as_frame(jobs)) is not None:
            self.frame = frame
        else:
            items = list(jobs)
            if items and all(isinstance(i, str | Path) for i in items):
                self._named = [_named(i) for i in items]
            else:
                for i in items:
                    if not isinstance(i, Job | Mapping):
                        raise UsageError(
                            f"jobs must be Job objects or mappings, got {type(i).__name__}"
                        )
                self._items = items

    @property
    def paths(self) -> list[Path | RemoteFile]:
        """The input files, a URL's glob listed (once, on first use: it may ask the network)."""
        if self._files is None:
            files: list[Path | RemoteFile] = []
            problems: list[InputProblem] = []
            for named in self._named:
                if isinstance(named, Path):
                    files.append(named)
                    continue
                try:
                    files.extend(expand(named))
                except InputError as e:
                    problems.extend(e.problems)
            if problems:
                raise InputError(problems)
            self._files = files
        return self._files

    @property
    def inputs(self) -> tuple[str, ...]:
        """The input files as ``run.json`` records them: paths, and URLs as shown."""
        return tuple(str(p) for p in self.paths)

    def scan(self, visit: Callable[[Job], None] | None = None) -> int:
        """Check every job before anything is sent, and return how many there are.

        Raises ``InputError`` naming every problem (the first 20 in full). ``visit``
        is called with each good job until the first problem, so a caller can look at each job in
        the same pass.
        """
        if self._named:
            check_paths(self.paths)
            remote = [
                p for p in self.paths if isinstance(p, RemoteFile) and p.name.endswith(".parquet")
            ]
            if remote:
                shaped = not self.columns.maps_prompt
                rows = check_footers(remote, self.columns.needed, shaped=shaped)
                log.info(
                    "%d remote Parquet file(s), %d rows by their footers: checking every job",
                    len(remote),
                    rows,
                )
        problems: list[InputProblem] = []
        more = 0
        seen = array("Q")  # id hashes: 8 bytes a job, however many jobs
        total = 0

        def problem(p: InputProblem) -> None:
            nonlocal more
            if len(problems) < _MAX_PROBLEMS:
                problems.append(p)
            else:
                more += 1

        for where, pos, item, base in self._located():
            try:
                job = self._job(where, pos, item, base)
            except BadRow as e:
                problem(InputProblem(where, e.message, e.job_id))
                continue
            total += 1
            seen.append(id_hash(job.id))
            issue = _job_problem(job, self.provider, self.endpoint, self.served, self.upload)
            if issue:
                problem(InputProblem(where, issue, job.id))
            elif visit is not None and not problems:
                visit(job)
        repeated = duplicates(seen)
        del seen
        if repeated:
            for p in self._duplicates(repeated):
                problem(p)
        if problems:
            raise InputError(problems, more=more)
        return total

    def __iter__(self) -> Iterator[Job]:
        """Every job, in input order; a bad row raises ``BadRow`` (``scan`` first to avoid that)."""
        for where, pos, item, base in self._located():
            yield self._job(where, pos, item, base)

    def _located(self) -> Iterator[tuple[str, str, _Item, Base]]:
        """(where, position id, item, folder its relative paths start from) for every row or
        Python object."""
        shaped = not self.columns.maps_prompt
        if self._named:
            for path in self.paths:
                base = path.parent if isinstance(path, Path) else path.url.rpartition("/")[0]
                for where, pos, row in iter_rows([path], self.columns.needed, shaped=shaped):
                    yield where, pos, row, base
        elif self.frame is not None:
            for where, pos, row in frame_rows(self.frame, self.columns.needed, shaped=shaped):
                yield where, pos, row, None
        else:
            for n, item in enumerate(self._items, start=1):
                yield f"jobs[{n - 1}]", f"job-{n}", item, None

    def _job(self, where: str, pos: str, item: _Item, base: Base) -> Job:
        if isinstance(item, BadRow):
            raise item
        if isinstance(item, Job):
            job = item
        else:
            job_id, fields = parse_row(item, position_id=pos, columns=self.columns, base=base)
            job = fields.job(job_id, source=where, default_model=self.default_model)
        if not job.model and self.default_model:
            job = replace(job, model=self.default_model)
        unset = {k: v for k, v in self.defaults.items() if getattr(job, k) in (None, ())}
        return replace(job, **unset) if unset else job

    def _duplicates(self, repeated: set[int]) -> Iterator[InputProblem]:
        """A second pass, only when some id hashes repeat: name each duplicate's line."""
        first: dict[str, str] = {}
        for where, pos, item, base in self._located():
            try:
                job = self._job(where, pos, item, base)
            except BadRow:
                continue
            if id_hash(job.id) not in repeated:
                continue
            if job.id in first:
                yield InputProblem(where, f"duplicate id, first seen at {first[job.id]}", job.id)
            else:
                first[job.id] = where


def _named(item: str | Path) -> str | Path:
    """A URL kept as text (a ``Path`` would fold its ``//``), a local file as a ``Path``."""
    return item if isinstance(item, str) and is_url(item) else Path(item)


def _job_problem(
    job: Job,
    provider: ProviderName,
    endpoint: str = "chat",
    served: Collection[str] | None = None,
    upload: bool = False,
) -> str | None:
    """Why this job (its model already resolved) cannot be sent to ``provider``, or to the
    endpoints serving the models ``served``, or None."""
    if not job.model:
        return "no model: give the job a 'model' or pass --model"
    if served is not None and job.model not in served:
        return (
            f"no endpoint of the pool (--pool) serves model {job.model!r}; its endpoints serve "
            f"{', '.join(sorted(served))}"
        )
    if not job.messages or not any(m.role != "system" for m in job.messages):
        return "no user message to send"
    if job.reasoning_effort is not None and (provider != "openai" or endpoint in _NO_EFFORT):
        return (
            "'reasoning_effort' is OpenAI's (chat's reasoning_effort, the Responses API's "
            "reasoning.effort): use --provider openai with --endpoint chat or responses"
        )
    if endpoint == "embeddings":
        return _embed_problem(job, provider)
    if job.task_type is not None:
        return "'task_type' is a field of embedding jobs: use --endpoint embeddings"
    native = job.native
    if (
        endpoint == "responses"
        and native is not None
        and (native.provider != "openai" or native.unconvertible)
    ):
        lost = ", ".join(native.unconvertible) or "its Gemini request"
        return (
            f"--endpoint responses builds its requests from a job's turns: this batch line's "
            f"{lost} has no place in them (write the job as a 'messages' line)"
        )
    if native is not None and native.provider != provider and native.unconvertible:
        return (
            f"this {native.provider} batch line cannot be sent to {provider} without losing "
            f"{', '.join(native.unconvertible)}; use --provider {native.provider}"
        )
    if provider == "gemini" and endpoint != "images":
        asked = _image_request(job)
        if asked:
            return (
                f"Gemini's generateContent takes no {' or '.join(asked)}: it answers one image per "
                "request, at a size its model chooses. Drop them (a job per image for more "
                "takes), or send the job to an OpenAI-compatible images API (--provider openai "
                "--endpoint images)"
            )
    media = job.media
    if media and endpoint == "images":
        return "the images endpoint takes a prompt only: this job sends images or files"
    if endpoint == "responses" and job.stop:
        return "the Responses API takes no stop sequences: drop 'stop' or use --endpoint chat"
    why = _media_problem(job, provider, upload, endpoint) if media else None
    if why is None and endpoint == "responses":
        why = _responses_media_problem(job)
    return why


_NO_EFFORT = frozenset({"images", "embeddings"})
"""Endpoints whose requests have no reasoning effort."""


def _responses_media_problem(job: Job) -> str | None:
    """Why a file of ``job`` cannot go to the Responses API: it takes images and files
    (``input_image``, ``input_file``) but no audio. Called once ``_media_problem`` found every
    file readable. https://platform.openai.com/docs/api-reference/responses/create"""
    for m in job.media:
        if m.is_url:
            continue
        mime = probe(m, dims=False).mime or ""
        if mime.startswith("audio/"):
            return f"{m.kind} {m.label}: the Responses API takes no audio (use --endpoint chat)"
    return None


def _embed_problem(job: Job, provider: ProviderName) -> str | None:
    """Why ``job`` cannot be embedded: an embedding request takes one text and nothing else."""
    if job.native is not None:
        return "--endpoint embeddings takes a 'text' (or a prompt), not a batch API line"
    if len(job.messages) != 1 or job.messages[0].role != "user" or job.media:
        return "--endpoint embeddings embeds one text: this job sends a conversation or files"
    if not job.text:
        return "the text to embed is empty (the providers refuse an empty input)"
    if job.task_type is not None:
        if provider != "gemini":
            return "'task_type' is Gemini's (taskType): OpenAI's embeddings take none"
        if job.task_type not in TASK_TYPES:
            return f"'task_type' must be one of {', '.join(TASK_TYPES)}, not {job.task_type!r}"
    return None


def _image_request(job: Job) -> list[str]:
    """The images-API fields a job asks for (``n`` above 1, ``size``, ``quality``), by name.

    Gemini's ``generateContent`` has no field for them: one image comes back per candidate, and
    several candidates (``candidateCount``) or an aspect ratio (``imageConfig.aspectRatio``, a
    ratio, not the ``WxH`` asked for) are not what was asked, and not taken by every image
    model; https://ai.google.dev/gemini-api/docs/image-generation and
    https://ai.google.dev/api/generate-content#generationconfig. So they are refused rather
    than mapped or dropped."""
    asked = ["n"] if job.n is not None and job.n > 1 else []
    return asked + [name for name in ("size", "quality") if getattr(job, name) is not None]


def _media_problem(
    job: Job, provider: ProviderName, upload: bool = False, endpoint: str = "chat"
) -> str | None:
    """Why an image or file of ``job`` cannot be sent, or why those it sends inline are together
    too big to (their base64 is 4/3 of their size); with ``upload`` the files that can go
    through the provider's Files API do not count."""
    total = 0
    for m in job.media:
        why, size = media_problem(m, provider)
        if why is not None:
            return why
        if upload and size and uploadable(m, probe(m, dims=False).mime, provider, endpoint):
            continue
        total += size
    limit = INLINE_LIMIT[provider]
    if total * 4 // 3 > limit:
        how = (
            "--upload never sends all inline; auto sends files through the Files API"
            if not upload
            else "counting what goes inline, not what goes through the Files API"
        )
        return (
            f"its images and files come to {total / 2**20:.1f} MiB, over {provider}'s inline "
            f"request limit of {limit // 2**20} MB once base64-encoded ({how}): make them "
            "smaller or send fewer per job"
        )
    return None
