"""The pydantic form of jobs/tickets.schema.json: ``--schema jobs.tickets_model:Ticket``."""

from typing import Literal

from pydantic import BaseModel, Field


class Order(BaseModel):
    id: str
    refund: bool


class Ticket(BaseModel):
    customer: str = Field(description="the customer's name")
    product: str
    sentiment: Literal["positive", "neutral", "negative"]
    priority: int = Field(ge=1, le=5)
    tags: list[str] = Field(max_length=4)
    order: Order | None = None
