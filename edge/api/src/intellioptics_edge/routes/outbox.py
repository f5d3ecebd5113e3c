"""``/edge-outbox/dead-letters``: what the cloud refused for good, to look at, re-send or discard.

A dead letter is an outbox item the cloud refused for a reason that cannot end by
itself (see ``outbox_sender.classify``). It stays, with its image, until a person acts:
re-send (after fixing the cause: a detector created again, a body limit raised) or
discard with a reason. Nothing here deletes a row: a discarded one is kept, with its
reason, until it ages out like a delivered one.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import Field

from intellioptics_common.schemas import StrictRequest
from intellioptics_edge.deps import EdgeAdmin, StateDep
from intellioptics_edge.errors import DeadLetterNotFoundError
from intellioptics_edge.outbox_store import DeadLetter

router = APIRouter(prefix="/edge-outbox", tags=["outbox"])


# The edge's admins only, as for PUT /edge-config: these routes change what reaches the cloud.
OutboxAdmin = EdgeAdmin

# An outbox sequence number is a SQLite rowid: a positive 64-bit integer.
Seq = Annotated[int, Path(ge=1, le=2**63 - 1, description="The dead letter's `seq`, as listed.")]


class ResendAll(StrictRequest):
    reason: str | None = Field(default=None, max_length=64, description="Only dead letters of this reason")


class Discard(StrictRequest):
    reason: str = Field(min_length=1, max_length=500, description="Why it is given up (kept with the row)")


def _out(letter: DeadLetter) -> dict[str, Any]:
    return {
        "seq": letter.seq,
        "image_query_id": letter.image_query_id,
        "kind": letter.kind,
        "detector_id": letter.detector_id,
        "reason": letter.reason,
        "last_error": letter.last_error,
        "attempts": letter.attempts,
        "created_at": letter.created_at,
        "dead_at": letter.dead_at,
    }


@router.get("/dead-letters")
async def list_dead_letters(
    state: StateDep,
    _caller: OutboxAdmin,
    reason: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> dict[str, Any]:
    """Dead letters, newest first, with the count of each reason."""
    letters = await asyncio.to_thread(state.outbox.dead_letters, limit, offset, reason)
    summary = await asyncio.to_thread(state.outbox.summary)
    return {"by_reason": summary.dead_letters, "results": [_out(letter) for letter in letters]}


@router.post("/dead-letters/resend")
async def resend_dead_letters(state: StateDep, _caller: OutboxAdmin, body: ResendAll | None = None) -> dict[str, int]:
    """Every dead letter (of ``reason``) pending again, due now."""
    reason = body.reason if body else None
    return {"resent": await asyncio.to_thread(state.outbox.resend, None, reason)}


@router.post("/dead-letters/{seq}/resend")
async def resend_dead_letter(seq: Seq, state: StateDep, _caller: OutboxAdmin) -> dict[str, int]:
    if not await asyncio.to_thread(state.outbox.resend, [seq]):
        raise DeadLetterNotFoundError(
            f"No dead letter {seq} in this edge's outbox (see GET /edge-outbox/dead-letters)."
        )
    return {"resent": 1}


@router.post("/dead-letters/{seq}/discard")
async def discard_dead_letter(seq: Seq, body: Discard, state: StateDep, _caller: OutboxAdmin) -> dict[str, int]:
    if not await asyncio.to_thread(state.outbox.discard, seq, body.reason):
        raise DeadLetterNotFoundError(
            f"No dead letter {seq} in this edge's outbox (see GET /edge-outbox/dead-letters)."
        )
    return {"discarded": 1}
