"""Both providers' batch APIs, answering every line through the mock's one request pipeline.

OpenAI's (``_batch_openai``: the Files and Batches APIs) and Gemini's (``_batch_gemini``:
batchGenerateContent and the Files API's upload) keep their batches and files in one store, and
move a batch on by the mock's clock the same way (``_batch_store``).
"""

from __future__ import annotations

from collections.abc import Callable

from ._batch_gemini import GeminiBatches
from ._batch_openai import OpenAIBatches
from ._batch_store import Batch, BatchStore, LineAnswer
from ._wire import Request, Response

__all__ = ["BatchService"]


class BatchService:
    """The batch routes of the mock; ``answer`` runs one line through the pipeline."""

    def __init__(
        self,
        answer: LineAnswer,
        clock: Callable[[], float],
        *,
        delay: float = 0.0,
        omit_keys: bool = False,
        gradual: bool = False,
        creates: Callable[[str], None] = lambda tag: None,
        file_ttl: float = 48 * 3600.0,
        file_processing: float = 0.0,
    ) -> None:
        self.store = BatchStore(
            answer,
            clock,
            delay=delay,
            gradual=gradual,
            creates=creates,
            file_ttl=file_ttl,
            file_processing=file_processing,
        )
        self.gemini = GeminiBatches(self.store, omit_keys=omit_keys)
        self.openai = OpenAIBatches(self.store)

    @property
    def batches(self) -> dict[str, Batch]:
        """Every batch created, both APIs', by id."""
        return self.store.batches

    async def handle(self, request: Request) -> Response | None:
        """The answer to a batch route, or None if ``request`` is for another route."""
        response = await self.gemini.handle(request)
        if response is None:
            response = await self.openai.handle(request)
        return response
