"""The multipart form of an RGB + depth image query, read in memory: one reader for the
HTTP services (the edge API and the cloud API carry Starlette; common's ``[http]`` extra).
The parts then go to :func:`intellioptics_common.rgbd.form_parts`."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from intellioptics_common.depth import MAX_DEPTH_BYTES
from intellioptics_common.errors import InvalidInputError
from intellioptics_common.rgbd import PARTS, RgbdBody, form_parts


class _InMemoryParser(MultiPartParser):
    # Parts stay in memory, as a raw image body does; spooling them to disk would add a
    # file write per query.
    spool_max_size = MAX_DEPTH_BYTES


async def read_form(headers: Headers, stream: AsyncGenerator[bytes, None]) -> RgbdBody:
    """The ``image`` and ``depth`` parts of a multipart body arriving as ``stream``."""
    parser = _InMemoryParser(headers, stream, max_files=len(PARTS), max_fields=len(PARTS))
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise InvalidInputError(
            f"The multipart body could not be read ({exc}); send file parts `image` and `depth`."
        ) from exc
    try:
        items = [
            (name, await value.read(), value.content_type) if isinstance(value, UploadFile) else (name, None, None)
            for name, value in form.multi_items()
        ]
    finally:
        await form.close()
    return form_parts(items)


async def read_form_bytes(headers: Headers, body: bytes) -> RgbdBody:
    """The same for a body already read (within its size limit)."""

    async def chunks() -> AsyncGenerator[bytes, None]:
        yield body

    return await read_form(headers, chunks())
