"""An SVG timeline of a run: one row a node, bars coloured by status, capability
resolutions as diamonds, the critical path on a highlighted band.

Plain SVG 1.1 with no script or CSS features beyond presentation attributes, so
browsers and librsvg draw it alike; every bar has a <title> tooltip.
"""
from __future__ import annotations

from xml.sax.saxutils import escape

from .analysis import timeline

COLORS = {
    "ok": "#2e9d4f",
    "available": "#3a78c9",
    "unavailable": "#a8a8a8",
    "failed": "#d0312d",
    "timeout": "#ef7d00",
    "interrupted": "#8e44ad",
    "skipped": "#ffffff",
    "resolved": "#3a78c9",
    "pending": "#ffffff",
}
OTHER = "#607d8b"
CRITICAL_BAND = "#fff0b3"
CRITICAL_STROKE = "#b8860b"

ROW = 16  # px per row; 200 nodes stay readable at 100 % zoom
LABEL_W = 320
PLOT_W = 900
RIGHT_W = 170
FONT = "DejaVu Sans, Verdana, Arial, sans-serif"
CHAR_W = 6.3  # average width of an 11 px sans-serif character


def _nice_step(span: float, target: int = 10) -> float:
    raw = max(span, 1e-3) / target
    mag = 10 ** _floor_log10(raw)
    for mult in (1, 2, 5, 10):
        if mult * mag >= raw:
            return mult * mag
    return 10 * mag


def _floor_log10(x: float) -> int:
    import math

    return math.floor(math.log10(x))


def _fmt_t(t: float, step: float) -> str:
    if step >= 1:
        return f"{t:.0f}s"
    if step >= 0.1:
        return f"{t:.1f}s"
    if step >= 0.01:
        return f"{t:.2f}s"
    return f"{t * 1000:.0f}ms"


def _clip(text: str, width_px: float) -> str:
    room = int(width_px / CHAR_W)
    return text if len(text) <= room else text[: max(1, room - 1)] + "…"


def _e(text: object) -> str:
    return escape(str(text), {'"': "&quot;"})


def _chain_points(record, rows, caps, node_top, cap_top, x) -> list[tuple[float, float]]:
    """The critical chain as a path: from each bar's end to the next one's start."""
    where = {}
    for i, row in enumerate(rows, start=1):
        if row["start_s"] is not None:
            where[row["id"]] = (row["start_s"], row["end_s"], node_top + i * ROW + ROW / 2)
    for i, cap in enumerate(caps, start=1):
        if cap["settled_s"] is not None:
            where[cap["id"]] = (cap["settled_s"], cap["settled_s"], cap_top + i * ROW + ROW / 2)
    points: list[tuple[float, float]] = []
    for nid in record.get("critical_path") or []:
        if nid in where:
            start, end, y = where[nid]
            points += [(x(start), y), (x(end), y)]
    return points


def render(record: dict) -> str:
    """Return the SVG document (a string) for a run record."""
    tl = timeline(record)
    rows, caps = tl["rows"], tl["caps"]
    end = max([tl["makespan_s"]] + [r["end_s"] or 0.0 for r in rows] + [c["settled_s"] or 0.0 for c in caps])
    span = end if end > 0 else 1.0
    step = _nice_step(span)
    scale = PLOT_W / (span * 1.02)
    x0 = LABEL_W
    header_h = 78
    cap_top = header_h + 4
    node_top = cap_top + (len(caps) + 1) * ROW + 8 if caps else cap_top
    height = node_top + (len(rows) + 1) * ROW + 30
    width = LABEL_W + PLOT_W + RIGHT_W

    def x(t: float) -> float:
        return x0 + t * scale

    out: list[str] = []
    w = out.append
    bands: list[str] = []  # drawn under the grid, so grid lines cross every row
    w('<?xml version="1.0" encoding="UTF-8"?>')
    w(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
      f'viewBox="0 0 {width} {height}" font-family="{FONT}" font-size="11">')
    w(f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>')

    # Title and summary.
    n_ran = sum(1 for r in rows if r["start_s"] is not None)
    title = (f"cidag run {tl['started_at']} — result {tl['result'] or '?'}, makespan {tl['makespan_s']:.2f}s, "
             f"critical path {float(record.get('critical_path_s') or 0.0):.2f}s, "
             f"{n_ran}/{len(rows)} nodes ran")
    w(f'<text x="10" y="20" font-size="14" font-weight="bold">{_e(title)}</text>')

    # Legend.
    lx = 10
    for label, color in [("ok", COLORS["ok"]), ("available", COLORS["available"]),
                         ("unavailable", COLORS["unavailable"]), ("failed", COLORS["failed"]),
                         ("timeout", COLORS["timeout"]), ("interrupted", COLORS["interrupted"])]:
        w(f'<rect x="{lx}" y="32" width="14" height="10" fill="{color}" stroke="#555" stroke-width="0.5"/>')
        w(f'<text x="{lx + 18}" y="41">{label}</text>')
        lx += 26 + len(label) * CHAR_W
    w(f'<rect x="{lx}" y="32" width="14" height="10" fill="#fff" stroke="#888" stroke-dasharray="2,2"/>')
    w(f'<text x="{lx + 18}" y="41">skipped (not started)</text>')
    lx += 26 + 21 * CHAR_W
    w(f'<polygon points="{lx + 6},31 {lx + 12},37 {lx + 6},43 {lx},37" fill="{COLORS["resolved"]}"/>')
    w(f'<text x="{lx + 16}" y="41">capability settled</text>')
    lx += 24 + 18 * CHAR_W
    w(f'<rect x="{lx}" y="31" width="30" height="12" fill="{CRITICAL_BAND}" stroke="{CRITICAL_STROKE}"/>')
    w(f'<text x="{lx + 36}" y="41">critical path</text>')

    # Axis: ticks on top, grid through every row.
    grid_at = len(out)
    axis_y = header_h - 8
    t = 0.0
    while t <= span * 1.02 + 1e-9:
        xt = x(t)
        w(f'<line x1="{xt:.1f}" y1="{axis_y}" x2="{xt:.1f}" y2="{height - 24}" stroke="#e2e2e2" stroke-width="1"/>')
        w(f'<text x="{xt:.1f}" y="{axis_y - 4}" text-anchor="middle" fill="#444">{_fmt_t(t, step)}</text>')
        w(f'<text x="{xt:.1f}" y="{height - 10}" text-anchor="middle" fill="#444">{_fmt_t(t, step)}</text>')
        t += step
    mx = x(tl["makespan_s"])
    w(f'<line x1="{mx:.1f}" y1="{axis_y}" x2="{mx:.1f}" y2="{height - 24}" stroke="#333" stroke-dasharray="4,3"/>')
    w(f'<text x="{mx + 3:.1f}" y="{axis_y + 10}" fill="#333">makespan</text>')

    content_at = len(out)  # the chain's connectors go here: above the grid, under the bars

    def band(i: int, top: float, critical: bool) -> None:
        y = top + i * ROW
        if critical:
            bands.append(f'<rect x="0" y="{y}" width="{width}" height="{ROW}" fill="{CRITICAL_BAND}"/>')
        elif i % 2:
            bands.append(f'<rect x="0" y="{y}" width="{width}" height="{ROW}" fill="#f6f7f9"/>')

    # Capabilities: a diamond where each settled.
    if caps:
        w(f'<text x="10" y="{cap_top + ROW - 4}" font-weight="bold">capabilities</text>')
        for i, cap in enumerate(caps, start=1):
            band(i, cap_top, cap["critical"])
            y = cap_top + i * ROW
            cy = y + ROW / 2
            weight = ' font-weight="bold"' if cap["critical"] else ""
            w(f'<text x="20" y="{y + ROW - 4}" fill="#333"{weight}>{_e(_clip("cap:" + cap["name"], LABEL_W - 30))}</text>')
            if cap["settled_s"] is None:
                continue
            cx = x(cap["settled_s"])
            color = COLORS["resolved"] if cap["status"] == "resolved" else COLORS["unavailable"]
            stroke = f' stroke="{CRITICAL_STROKE}" stroke-width="2"' if cap["critical"] else ""
            who = cap["provider"] or cap["status"]
            tip = f"cap:{cap['name']} {cap['status']} at {cap['settled_s']:.3f}s" + (
                f" from {cap['provider']}" if cap["provider"] else "")
            w(f'<g><title>{_e(tip)}</title>'
              f'<polygon points="{cx:.1f},{y + 2} {cx + 6:.1f},{cy} {cx:.1f},{y + ROW - 2} {cx - 6:.1f},{cy}" '
              f'fill="{color}"{stroke}/></g>')
            w(f'<text x="{cx + 9:.1f}" y="{y + ROW - 4}" fill="#555">{_e(_clip(str(who), RIGHT_W + PLOT_W - (cx - x0) - 12))}</text>')

    # Nodes: one bar a node.
    w(f'<text x="10" y="{node_top + ROW - 4}" font-weight="bold">nodes (by start time)</text>')
    for i, row in enumerate(rows, start=1):
        band(i, node_top, row["critical"])
        y = node_top + i * ROW
        weight = ' font-weight="bold"' if row["critical"] else ""
        color_text = "#333" if row["kind"] == "module" else "#1d4f91"
        w(f'<text x="20" y="{y + ROW - 4}" fill="{color_text}"{weight}>{_e(_clip(row["id"], LABEL_W - 30))}</text>')
        if row["start_s"] is None:
            note = f"{row['status'] or 'not started'}: {row['reason']}" if row["reason"] else (row["status"] or "not started")
            w(f'<g><title>{_e(row["id"] + " " + note)}</title>'
              f'<rect x="{x0 + 1}" y="{y + 3}" width="10" height="{ROW - 6}" fill="#fff" stroke="#888" stroke-dasharray="2,2"/>'
              f'<text x="{x0 + 16}" y="{y + ROW - 4}" fill="#777" font-style="italic">{_e(_clip(note, PLOT_W + RIGHT_W - 30))}</text></g>')
            continue
        bx = x(row["start_s"])
        bw = max(1.5, (row["end_s"] - row["start_s"]) * scale)
        fill = COLORS.get(row["status"], OTHER)
        stroke = f'stroke="{CRITICAL_STROKE}" stroke-width="2"' if row["critical"] else 'stroke="#333" stroke-width="0.4"'
        dur = row["end_s"] - row["start_s"]
        tip = f"{row['id']}: {row['status']} at {row['start_s']:.3f}s for {dur:.3f}s"
        if row["worker"] is not None:
            tip += f" (worker {row['worker']})"
        if row["reason"]:
            tip += f" — {row['reason']}"
        w(f'<g><title>{_e(tip)}</title><rect x="{bx:.1f}" y="{y + 2}" width="{bw:.1f}" height="{ROW - 4}" '
          f'fill="{fill}" {stroke}/></g>')
        label = f"{dur:.2f}s" if row["status"] in ("ok", "available") else f"{dur:.2f}s {row['status']}"
        if row["reason"] and row["status"] not in ("ok", "available"):
            label += f": {row['reason']}"
        w(f'<text x="{bx + bw + 4:.1f}" y="{y + ROW - 4}" fill="#444">'
          f'{_e(_clip(label, max(40.0, width - (bx + bw + 8))))}</text>')
    # Bands first (under the grid), then the chain, bars and text as drawn.
    chain = _chain_points(record, rows, caps, node_top, cap_top, x)
    links = [
        f'<line x1="{a[0]:.1f}" y1="{a[1]:.1f}" x2="{b[0]:.1f}" y2="{b[1]:.1f}" stroke="{CRITICAL_STROKE}" '
        f'stroke-width="1.5" stroke-dasharray="4,3"/>'
        for a, b in zip(chain[1::2], chain[2::2])
    ]
    out[content_at:content_at] = links
    out[grid_at:grid_at] = bands
    w("</svg>")
    return "\n".join(out) + "\n"
