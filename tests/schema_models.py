"""pydantic models the structured-output tests name as ``tests.schema_models:Model``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Line(BaseModel):
    sku: str
    quantity: int = Field(ge=1, le=50)
    price: float = Field(ge=0, le=999)


class Invoice(BaseModel):
    """Nested objects and arrays, an enum, optional fields (nullable or with a default)."""

    vendor: str
    currency: Literal["EUR", "USD", "JPY"]
    paid: bool
    lines: list[Line] = Field(min_length=1, max_length=3)
    note: str | None = None
    discount: int = 0


class Loose(BaseModel):
    """What OpenAI's strict mode cannot express: free-form keys."""

    extra: dict[str, int]
