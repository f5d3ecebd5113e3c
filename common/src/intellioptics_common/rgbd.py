"""An image query's image and depth map as they arrive: multipart parts or the JSON form.

Two bodies carry an RGB image with its depth map (docs/api.md, "RGB + depth image
queries"), at the edge and at the cloud alike; both become ``(image bytes, image
content type, depth bytes)``, and the service checks the pixels
(:func:`intellioptics_common.depth.checked_depth`). Both read the multipart body with
:mod:`intellioptics_common.rgbd_form`, which hands the parts to :func:`form_parts`:

- ``POST …/image-queries`` with ``multipart/form-data``: file parts ``image`` and
  ``depth`` (``depth`` may be left out: the query is then an image-only query);
- ``POST …/image-queries/rgbd`` with ``application/json``: the design documents' form
  ``{"rgb_base64": …, "depth_base64": …}`` (standard base64; a ``data:…;base64,``
  prefix is accepted, as browsers write it).

What is wrong with the body's shape is a 400 saying what to send, never a 422 (which the
gateway would replay to the cloud).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, ValidationError

from intellioptics_common.depth import MAX_DEPTH_BYTES
from intellioptics_common.errors import ImageDecodeError, InvalidInputError
from intellioptics_common.imaging import sniff_format
from intellioptics_common.jsonlimits import loads_limited

PARTS = ("image", "depth")
_FORM_HINT = "curl -F image=@frame.png -F depth=@frame_depth.png"


@dataclass(frozen=True)
class RgbdBody:
    image: bytes
    content_type: str
    depth: bytes | None


class RgbdJson(BaseModel):
    """``POST …/image-queries/rgbd``: both halves of the pair, base64-encoded."""

    model_config = ConfigDict(extra="forbid")

    rgb_base64: str
    depth_base64: str


def is_multipart(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() == "multipart/form-data"


def image_content_type(image: bytes, declared: str | None) -> str:
    """The declared ``image/*`` type of the image part, else the one its bytes show."""
    value = (declared or "").split(";")[0].strip().lower()
    if value.startswith("image/"):
        return value
    found = sniff_format(image)
    if found is None:
        raise ImageDecodeError("The image is not a supported image; send JPEG, PNG, WebP or BMP bytes.")
    return "image/" + found.lower()


def form_parts(items: Sequence[tuple[str, bytes | None, str | None]]) -> RgbdBody:
    """``(name, file bytes or None for a text field, content type)`` per part → the pair."""
    parts: dict[str, tuple[bytes, str | None]] = {}
    for name, data, content_type in items:
        if name not in PARTS or name in parts:
            raise InvalidInputError(
                f"Unexpected multipart part {name!r}: send one file part `image` and, optionally, one file part "
                f"`depth` ({_FORM_HINT})."
            )
        if data is None:
            raise InvalidInputError(f"The `{name}` part must be a file part with a filename ({_FORM_HINT}).")
        parts[name] = (data, content_type)
    if "image" not in parts:
        raise InvalidInputError(
            f"The multipart body has no `image` part; send the image as a file part ({_FORM_HINT})."
        )
    image, declared = parts["image"]
    depth = parts["depth"][0] if "depth" in parts else None
    return RgbdBody(image, image_content_type(image, declared), depth)


def rgbd_json(raw: bytes, max_image_bytes: int) -> RgbdBody:
    """The JSON form's body → the pair; base64 and shape errors are 400s naming the field."""
    # base64 makes 4 bytes of 3; the rest is room for the keys.
    limit = (max_image_bytes + MAX_DEPTH_BYTES) * 4 // 3 + 1024
    value = loads_limited(raw, "The RGB + depth body", max_bytes=limit)
    try:
        body = RgbdJson.model_validate(value)
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors())
        raise InvalidInputError(
            f'The body must be a JSON object {{"rgb_base64": "…", "depth_base64": "…"}} (both base64 strings); '
            f"check: {where}."
        ) from None
    image = _base64(body.rgb_base64, "rgb_base64")
    return RgbdBody(image, image_content_type(image, None), _base64(body.depth_base64, "depth_base64"))


def _base64(text: str, field: str) -> bytes:
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError(f"{field} is not valid base64; send the file's bytes base64-encoded.") from None
