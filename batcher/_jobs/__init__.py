"""Jobs: the normalised request model, and how files and Python objects become a stream of jobs.

Each module holds one step of the way from input to job:

    _model      Job, Message, Part, NativeRequest: what one request asks for
    _readers    JSONL, JSONL.gz and Parquet files as a stream of rows, and tables' rows
    _remote     files by URL (s3://, gs://, az://, hf://, https://) through pyarrow.fs
    _frames     pyarrow tables, pandas and polars data frames, datasets.Dataset as record batches
    _columns    ColumnOptions: --prompt-column, --prompt-template, --id-column
    _fields     JobFields (a row's request), and the checks of one value in a row
    _formats    which of the five line shapes a row has; the prompt, messages, text, column parsers
    _openai_rows, _gemini_rows   the parsers of OpenAI's shapes and of Gemini batch lines
    _source     JobSource: the checking first pass (scan) and the sending second pass

A row is one input line or Parquet row; a record, elsewhere in batcher, is only ever a result.
"""

from __future__ import annotations

from ._columns import ColumnOptions
from ._model import REASONING_EFFORTS, TASK_TYPES, Job, Message, NativeRequest, Part, ProviderName
from ._source import JobSource

__all__ = [
    "REASONING_EFFORTS",
    "TASK_TYPES",
    "ColumnOptions",
    "Job",
    "JobSource",
    "Message",
    "NativeRequest",
    "Part",
    "ProviderName",
]
