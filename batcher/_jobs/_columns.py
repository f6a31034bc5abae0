"""The column mapping: how to read datasets whose columns are not one of the four line shapes.

``--prompt-column`` takes the prompt from one column, ``--prompt-template`` builds it from several,
and ``--id-column`` names the column holding each job's id. The options are checked here, once,
before any file is read.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field

from .._core.errors import BadOption
from .._core.flag import flag

__all__ = ["ColumnOptions"]


@dataclass(frozen=True, slots=True)
class ColumnOptions:
    """How to read datasets whose columns are not one of the four shapes."""

    prompt_column: str | None = field(
        default=None,
        metadata=flag("take the prompt from this column", metavar="COL", exclusive="prompt"),
    )
    prompt_template: str | None = field(
        default=None,
        metadata=flag(
            "build the prompt from columns, e.g. 'Summarize: {text}'",
            metavar="TEMPLATE",
            exclusive="prompt",
        ),
    )
    id_column: str | None = field(
        default=None, metadata=flag("take the job id from this column", metavar="COL")
    )
    image_column: str | None = field(
        default=None,
        metadata=flag(
            "send the images in this column with each prompt: image bytes, a path (relative to "
            "the file's folder) or URL, or a list of either",
            metavar="COL",
        ),
    )
    template_fields: tuple[str, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        if self.prompt_column is not None and self.prompt_template is not None:
            raise BadOption("prompt_column", "and prompt_template cannot be used together")
        if self.prompt_template is not None:
            try:
                names = [f for _, f, _, _ in string.Formatter().parse(self.prompt_template) if f]
            except ValueError as e:
                raise BadOption("prompt_template", f"is not a valid template: {e}") from None
            if not names:
                raise BadOption("prompt_template", "names no column, e.g. 'Summarize: {text}'")
            bad = [n for n in names if not n.isidentifier() and not n.replace(" ", "_").isalnum()]
            if bad:
                raise BadOption("prompt_template", f"takes plain column names in braces, not {bad}")
            object.__setattr__(self, "template_fields", tuple(dict.fromkeys(names)))

    @property
    def maps_prompt(self) -> bool:
        """The prompt comes from a column or a template, not from one of the four shapes."""
        return self.prompt_column is not None or self.prompt_template is not None

    @property
    def needed(self) -> tuple[str, ...]:
        """The columns this mapping needs in every row."""
        cols = [c for c in (self.prompt_column, self.id_column, self.image_column) if c is not None]
        return (*cols, *self.template_fields)
