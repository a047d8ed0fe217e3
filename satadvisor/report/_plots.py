"""Shared style of the report plots (palette, layout, labels, ticks); the plots themselves live in
:mod:`._plots_analysis` (analysis page) and :mod:`._plots_study` (study page).

Every plot is made in two steps: extract a plain data object, then render a plotly figure dict.

The ``*_data`` functions read the analysis dict (or the study summary) and return small frozen dataclasses (or None
when there is nothing to plot); the ``*_figure`` functions turn those into plotly figure dicts
(``{"data": [...], "layout": {...}}``) that the page hands to ``Plotly.newPlot``. Tests check
the data and the figure dicts, not pixels.

Plotly renders trace and axis text as a small subset of HTML, so every user-supplied string
(layer names) goes through :func:`label` (HTML-escaped; plotly shows the characters as typed).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

Figure = dict[str, Any]

# Palette (Tableau 10 shades): calm blue for ordinary layers, coral for the tail.
COLOR_LAYER = "#4C78A8"
COLOR_TAIL = "#E45756"
COLOR_EVAL = "#F58518"
COLOR_BORDER = "#6B7280"
COLOR_INPUT = "#54A24B"
HATCH_UNPRODUCTIVE = "/"
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"


def label(text: str) -> str:
    """A user-supplied string made safe for plotly's HTML-like text rendering."""
    return html.escape(str(text), quote=False)


def base_layout(**overrides: Any) -> dict[str, Any]:
    """The layout every chart starts from: system font, light grid, tight margins."""
    axis = {"gridcolor": "#E5E7EB", "zeroline": False, "linecolor": "#D1D5DB", "automargin": True}
    layout: dict[str, Any] = {
        "font": {"family": FONT, "size": 12, "color": "#1F2937"},
        "paper_bgcolor": "#FFFFFF",
        "plot_bgcolor": "#FFFFFF",
        "margin": {"l": 56, "r": 16, "t": 36, "b": 48},
        "hoverlabel": {"font": {"family": "ui-monospace, SFMono-Regular, Menlo, monospace"}},
        "legend": {"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"},
        "xaxis": dict(axis),
        "yaxis": dict(axis),
    }
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(layout.get(key), Mapping):
            layout[key] = {**layout[key], **value}
        else:
            layout[key] = value
    return layout


def border_marker(index: int, text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A dashed vertical line before category ``index`` and its label (paper-relative y)."""
    x = index - 0.5
    shape = {
        "type": "line",
        "xref": "x",
        "yref": "paper",
        "x0": x,
        "x1": x,
        "y0": 0,
        "y1": 1,
        "line": {"color": COLOR_BORDER, "width": 1.5, "dash": "dash"},
    }
    annotation = {
        "xref": "x",
        "yref": "paper",
        "x": x,
        "y": 1,
        "text": text,
        "showarrow": False,
        "xanchor": "left",
        "yanchor": "bottom",
        "xshift": 4,
        "font": {"size": 11, "color": COLOR_BORDER},
    }
    return shape, annotation


def log_ticks(lo: float, hi: float) -> list[int]:
    """Tick values 1, 2, 5, 10, 20, 50, … covering [lo, hi] (plotly's log ticks label 2 and 5
    of every decade as bare digits, which reads as nonsense)."""
    ticks: list[int] = []
    decade = 1
    while decade <= 10 * hi:
        ticks.extend(m * decade for m in (1, 2, 5) if lo / 2 <= m * decade <= hi * 2)
        decade *= 10
    return ticks
