"""The ``streams:`` section of edge-config, and the redaction of camera credentials.

Written once here because two parts read it: the edge API validates it (``PUT
/edge-config`` and the YAML file refuse unknown keys and bad values with a clear 400),
and the stream service (``edge/streams``) runs it. docs/edge-config.md describes every key.

    streams:
      line-3:
        url: rtsp://user:pass@10.0.0.12:554/stream1
        detector_ids: [det_abc...]
        fps: 2
        motion_threshold: 0.01
        sinks:
          - {kind: webhook, url: "http://mes.local/hook", send: alerts}
          - {kind: mqtt, host: broker.local, topic: line-3/results}
        alerts:
          - {name: jammed, when: same_answer, answer: "YES", times: 3}
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

DetectorId = Annotated[str, Field(pattern=r"^det_[A-Za-z0-9]{27}$")]
StreamName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
SOURCE_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "file")
# userinfo of any URL in any text: scheme://user:password@ (the password may hold anything but @ and /)
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:@/\s]*):(?P<password>[^@/\s]*)@")
REDACTED = "***"


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` with the password of every URL in it, and each of ``secrets``, replaced by ``***``.

    Applied to URLs and to exception messages alike: FFmpeg and httpx put the URL they
    failed on into their errors.
    """
    redacted = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", text)
    for secret in secrets:
        if secret:
            redacted = redacted.replace(secret, REDACTED)
    return redacted


def url_secrets(url: str) -> tuple[str, ...]:
    """The password of ``url``, to redact wherever it turns up (FFmpeg may print it decoded)."""
    match = _USERINFO.search(url)
    if not match or not match["password"]:
        return ()
    password = match["password"]
    decoded = unquote(password)
    return (password,) if decoded == password else (password, decoded)


# A path segment that is a credential rather than a name: long, with letters and digits
# (Slack's /services/T0/B0/<token>, a Teams or Discord webhook's key).
_TOKEN_SEGMENT = re.compile(r"^(?=.*[A-Za-z])(?=.*[0-9])[A-Za-z0-9_\-]{16,}$")


def webhook_secrets(url: str) -> tuple[str, ...]:
    """What a webhook URL may carry as a credential besides a password: every query
    value (``?token=…``) and every token-like path segment."""
    parts = urlsplit(url)
    found = list(url_secrets(url))
    for _, value in parse_qsl(parts.query, keep_blank_values=False):
        if len(value) >= 4:
            found += [value, quote(value, safe="")]
    found += [segment for segment in parts.path.split("/") if _TOKEN_SEGMENT.match(segment)]
    return tuple(dict.fromkeys(found))


class _Strict(BaseModel):
    # Unknown keys are refused: a misspelt option must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class WebhookSink(_Strict):
    kind: Literal["webhook"]
    url: Annotated[str, Field(pattern=r"^https?://[^\s]+$", max_length=2000)]
    # results: every answer; alerts: only when an alert condition fires; all: both.
    send: Literal["results", "alerts", "all"] = "results"
    headers: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{1,100}$")], Annotated[str, Field(max_length=2000)]] = (
        Field(default_factory=dict)
    )
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 5


class MqttSink(_Strict):
    kind: Literal["mqtt"]
    host: Annotated[str, Field(min_length=1, max_length=255)]
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    # MQTT topic names may not hold the wildcards + and #.
    topic: Annotated[str, Field(pattern=r"^[^+#\s]+$", max_length=500)]
    send: Literal["results", "alerts", "all"] = "results"
    qos: Literal[0, 1, 2] = 1
    username: Annotated[str, Field(max_length=200)] | None = None
    password: Annotated[str, Field(max_length=200)] | None = None
    tls: bool = False


Sink = Annotated[WebhookSink | MqttSink, Field(discriminator="kind")]


class AlertRule(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_. -]{0,63}$")]
    # same_answer: the answer was ``answer`` (any answer if unset) ``times`` times in a row;
    # answer_changed: the answer differs from the previous one. Fires once per streak/change.
    when: Literal["same_answer", "answer_changed"]
    answer: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    times: Annotated[int, Field(ge=1, le=10_000)] = 1
    # Only this detector's answers (default: each detector of the stream on its own).
    detector_id: DetectorId | None = None

    @model_validator(mode="after")
    def _fields_fit_the_condition(self) -> Self:
        if self.when == "answer_changed" and (self.answer is not None or self.times != 1):
            raise ValueError("answer and times apply to when: same_answer only")
        return self


class StreamConfig(_Strict):
    # rtsp://, rtsps://, rtmp://, http(s):// (MJPEG or a video URL), file:///path or
    # /path (a video file, played at its own rate and looped), /dev/videoN (a USB camera).
    url: Annotated[str, Field(min_length=1, max_length=2000)]
    detector_ids: Annotated[list[DetectorId], Field(min_length=1, max_length=20)]
    fps: Annotated[float, Field(gt=0, le=30)] = 1.0
    # Share of the pixels of a small grey thumbnail that must change for a frame to be
    # submitted; unset: every sampled frame is submitted.
    motion_threshold: Annotated[float, Field(ge=0, le=1)] | None = None
    enabled: bool = True
    jpeg_quality: Annotated[int, Field(ge=30, le=100)] = 85
    sinks: Annotated[list[Sink], Field(max_length=10)] = Field(default_factory=list)
    alerts: Annotated[list[AlertRule], Field(max_length=20)] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if len(set(self.detector_ids)) != len(self.detector_ids):
            raise ValueError("detector_ids must not repeat a detector")
        source = self.url.strip()
        if not source.startswith("/"):
            scheme = urlsplit(source).scheme.lower()
            if scheme not in SOURCE_SCHEMES:
                raise ValueError(
                    f"url must start with one of {', '.join(s + '://' for s in SOURCE_SCHEMES)} or be an absolute "
                    f"path (a file or /dev/videoN), got {redact(source)!r}"
                )
        for rule in self.alerts:
            if rule.detector_id is not None and rule.detector_id not in self.detector_ids:
                raise ValueError(f"alert {rule.name!r}: detector_id {rule.detector_id} is not in detector_ids")
        if len({rule.name for rule in self.alerts}) != len(self.alerts):
            raise ValueError("alert names must be unique within a stream")
        return self

    @property
    def redacted_url(self) -> str:
        return redact(self.url)

    def secrets(self) -> tuple[str, ...]:
        """Every credential this stream holds, for redaction of logs and status."""
        found = list(url_secrets(self.url))
        for sink in self.sinks:
            if isinstance(sink, WebhookSink):
                found += webhook_secrets(sink.url)
                # Header values are credentials more often than not (Authorization, X-Api-Key, …).
                found += [value for value in sink.headers.values() if len(value) >= 4]
            elif sink.password:
                found.append(sink.password)
        return tuple(found)


Streams = dict[StreamName, StreamConfig]
