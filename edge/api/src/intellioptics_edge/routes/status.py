"""``/status``: what this edge is doing, for a person (HTML) or a script (JSON)."""

from __future__ import annotations

import asyncio
import html
import time
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import HTMLResponse, JSONResponse

from intellioptics_edge.deps import StateDep
from intellioptics_edge.outbox_sender import summary_as_dict
from intellioptics_edge.state import EdgeState

router = APIRouter(tags=["status"])


async def collect_status(state: EdgeState) -> dict[str, Any]:
    config_state = state.config.state
    configured = {entry.detector_id: entry for entry in config_state.config.detectors}
    per_detector = state.stats.snapshot()
    # GET /detectors of the inference service: looking must not load (and evict) models.
    models = await state.inference.model_states()
    cache_size, states = models if models is not None else (None, {})
    ids = sorted(set(configured) | set(per_detector) | set(states))
    outbox = summary_as_dict(await asyncio.to_thread(state.outbox.summary))
    outbox["full"] = state.outbox.full
    disk_full = state.outbox.disk_full
    # Asked only when edge-config has streams: an edge without cameras pays nothing.
    streams = await state.streams.report() if config_state.config.streams else None
    stored = await asyncio.to_thread(state.store.count)
    detectors = []
    for detector_id in ids:
        entry = configured.get(detector_id)
        model = states.get(detector_id)
        primary, oodd = model.serving_versions if model else (None, None)
        detectors.append(
            {
                "detector_id": detector_id,
                "name": entry.name if entry else None,
                "edge_inference_config": entry.edge_inference_config if entry else "default",
                "model_state": model.state if model else ("unknown" if models is None else "not_installed"),
                "serving_model_versions": {"primary": primary, "oodd": oodd},
                "model_refused_reason": model.refused_reason if model else None,
                **per_detector.get(detector_id, {"counts": {}, "total": 0}),
            }
        )
    return {
        "uptime_s": round(time.time() - state.stats.started_at, 1),
        "mode": "offline" if state.cloud is None else "cloud",
        "cloud_url": state.settings.cloud_base or None,
        "edge_config": {"path": str(state.config.path), "error": config_state.error},
        "inference": {"reachable": models is not None, "cache_size": cache_size},
        # A full data disk stalls answers and the outbox: said here until a write works again.
        "storage": {
            "disk_full": disk_full is not None,
            "since": None if disk_full is None else round(disk_full.since, 1),
            "detail": None if disk_full is None else disk_full.detail,
        },
        "outbox_pending": outbox["pending"],
        "outbox": outbox,
        "cloud_sync": state.background.status(),
        "stored_image_queries": stored,
        "detectors": detectors,
        "streams": None if streams is None else streams.streams,
        "streams_error": None if streams is None else streams.error or streams.config_error,
    }


@router.get("/status.json")
async def status_json(state: StateDep) -> dict[str, Any]:
    return await collect_status(state)


@router.get("/status")
async def status_page(state: StateDep, format: str = "html") -> Response:
    status = await collect_status(state)
    if format == "json":
        return JSONResponse(status)
    return HTMLResponse(render_status(status))


def _cell(value: Any) -> str:
    return f"<td>{html.escape('—' if value is None else str(value))}</td>"


def render_outbox(status: dict[str, Any]) -> str:
    outbox, sync = status["outbox"], status["cloud_sync"]
    age = outbox["oldest_pending_age_s"]
    parts = [
        f"delivered {outbox['delivered']}",
        f"retries {outbox['retries']}",
        f"dead letters {outbox['dead_letters']['total']} waiting ({outbox['dead']} ever)",
        f"retrying {outbox['retrying']}",
        f"dropped {outbox['dropped']['audit']} audits / {outbox['dropped']['escalation']} escalations",
        f"oldest pending {'—' if age is None else f'{age:.0f} s'}",
    ]
    if outbox["full"]:
        parts.append("<b class=err>full of escalations: new escalations are refused (503)</b>")
    if not sync["enabled"]:
        parts.append(f"<b>cloud sync off</b>: {html.escape(str(sync['disabled_reason']))}")
    elif sync["sender_last_error"]:
        parts.append(f"last delivery error: {html.escape(str(sync['sender_last_error']))}")
    return "outbox: " + ", ".join(parts)


def render_streams(status: dict[str, Any]) -> str:
    if status["streams"] is None and status["streams_error"] is None:
        return ""
    error = status["streams_error"]
    warning = f"<p class=err>streams: {html.escape(error)}</p>" if error else ""
    headers = (
        "stream", "url", "state", "fps", "read", "submitted", "no motion", "dropped", "reconnects",
        "last error", "last image query", "last results",
    )  # fmt: skip
    rows = []
    for s in status["streams"] or []:
        results = ", ".join(
            f"{detector}: {r['label']} ({r['confidence']:.2f})"
            if r.get("confidence") is not None
            else f"{detector}: {r['label']}"
            for detector, r in s["last_results"].items()
        )
        cells = [
            s["name"], s["url"], s["state"], s["fps"], s["frames_read"], s["frames_submitted"], s["frames_skipped_motion"],
            s["frames_dropped"], s["reconnects"], s["last_error"], s["last_image_query_id"], results or None,
        ]  # fmt: skip
        rows.append("<tr>" + "".join(_cell(c) for c in cells) + "</tr>")
    table = f"<table><tr>{''.join(f'<th>{h}</th>' for h in headers)}</tr>{''.join(rows)}</table>"
    return f"<h2>Streams</h2>{warning}{table}"


def render_status(status: dict[str, Any]) -> str:
    rows = []
    for d in status["detectors"]:
        counts = d.get("counts", {})
        latency = d.get("latency_ms", {})
        cells = [
            d["detector_id"], d.get("name"), d["edge_inference_config"], d["model_state"],
            d["serving_model_versions"]["primary"], d["serving_model_versions"]["oodd"], d.get("total", 0), counts.get("edge", 0),
            counts.get("escalated", 0), counts.get("audited", 0), counts.get("cloud", 0), counts.get("refused", 0),
            latency.get("p50"), latency.get("p99"),
            " · ".join(f"{method} {count}" for method, count in sorted(d.get("methods", {}).items())),
        ]  # fmt: skip
        rows.append("<tr>" + "".join(_cell(c) for c in cells) + "</tr>")
    headers = (
        "detector", "name", "edge config", "model", "model v", "OODD v", "queries", "edge answers",
        "escalations", "audits", "to cloud", "refused", "p50 ms", "p99 ms", "answered by",
    )  # fmt: skip
    error = status["edge_config"]["error"]
    warning = f"<p class=err>edge-config refused: {html.escape(error)}</p>" if error else ""
    if status["storage"]["disk_full"]:
        detail = html.escape(str(status["storage"]["detail"]))
        warning += f"<p class=err>edge data disk full: {detail}; free space in the edge data directory.</p>"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>IntelliOptics edge status</title>
<meta http-equiv="refresh" content="10">
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}.err{{color:#b00}}</style></head>
<body><h1>IntelliOptics edge</h1>
<p>Mode: <b>{html.escape(status["mode"])}</b> · up {status["uptime_s"]} s ·
inference cache: {status["inference"]["cache_size"] or "unreachable"} ·
outbox pending: {status["outbox_pending"]["escalation"]} escalations, {status["outbox_pending"]["audit"]} audits ·
stored answers: {status["stored_image_queries"]} ·
{render_outbox(status)} · <a href="/status.json">JSON</a> · <a href="/metrics">metrics</a></p>
{warning}
<table><tr>{"".join(f"<th>{h}</th>" for h in headers)}</tr>{"".join(rows)}</table>
{render_streams(status)}
</body></html>"""
