"""What every report page shares: the jinja2 environment, value formatting, safe JSON, files.

A page type (the analysis page now, the study page later) builds a plain context dict, renders
its template (which extends ``base.html``) with :func:`render_page`, and hands the files to
:func:`write_bundle`, which writes them with ``plotly.min.js`` into a staged directory.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from satadvisor._io import staged_dir

PLOTLY_JS = "plotly.min.js"
"""Name of the plotly bundle written next to ``index.html``; the page loads it by this path."""

_JS_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def finite(value: Any) -> Any:
    """``value`` with every NaN/±inf float (also nested in dicts, lists, tuples) replaced by None.

    JSON has no NaN; a diverged run's loss would otherwise make ``analysis.json`` unreadable to
    strict parsers (and ``JSON.parse`` in the page).
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def _json_default(obj: Any) -> Any:
    # numpy scalars/arrays and paths sneak into results; anything else is a bug upstream.
    if hasattr(obj, "tolist"):
        return finite(obj.tolist())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def to_json(value: Any, *, indent: int | None = None) -> str:
    """Strict JSON (non-finite floats written as null), for files and for pages."""
    return json.dumps(finite(value), indent=indent, allow_nan=False, default=_json_default)


def script_json(value: Any) -> Markup:
    """JSON that is safe inside ``<script type="application/json">`` (no ``</script>``, no ``<!--``).

    ``<``, ``>``, ``&`` and the two JS line separators become ``\\u003c``-style escapes, which
    ``JSON.parse`` turns back into the same characters.
    """
    text = json.dumps(finite(value), allow_nan=False, default=_json_default, ensure_ascii=True)
    for char, escape in _JS_ESCAPES.items():
        text = text.replace(char, escape)
    return Markup(text)


# ---------------------------------------------------------------------------------------------
# Value formatting (jinja filters). All return plain text; autoescaping happens in the template.


def fmt_count(value: float | None, *, digits: int = 3) -> str:
    """A count with an SI suffix: 313_700_000 → ``313.7 M``; None → ``—``."""
    if value is None:
        return "—"
    value = float(value)
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.{digits}g} {suffix}"
    return f"{value:.{digits}g}"


def fmt_ratio(value: float | None) -> str:
    """A ratio to the baseline: 0.62 → ``0.62×``."""
    return "—" if value is None else f"{value:.2f}×"


def fmt_change(value: float | None) -> str:
    """A ratio as a signed change: 0.62 → ``−38 %``, 4.0 → ``+300 %``."""
    if value is None:
        return "—"
    pct = (value - 1.0) * 100.0
    if abs(pct) < 0.5:
        return "±0 %"
    return f"{'+' if pct > 0 else '−'}{abs(pct):.0f} %"


def fmt_fraction(value: float | None, *, digits: int = 3) -> str:
    """A fraction in [0, 1] as a decimal: 0.1234 → ``0.123``."""
    return "—" if value is None else f"{value:.{digits}f}"


def fmt_percent(value: float | None, *, digits: int = 1) -> str:
    """A fraction in [0, 1] as a percentage: 0.9312 → ``93.1 %``."""
    return "—" if value is None else f"{100.0 * value:.{digits}f} %"


def fmt_seconds(value: float | None) -> str:
    """A duration in seconds: 125.3 → ``2 min 5 s``; 4.2 → ``4.2 s``."""
    if value is None:
        return "—"
    if value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(round(value), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def fmt_value(value: Any) -> str:
    """A knob or evidence value as a user would type it: True → ``true``, [3, 5] → ``[3, 5]``."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return repr(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(finite(value), default=_json_default)


def fmt_label(key: str) -> str:
    """A snake_case key as a label: ``kernel_size`` → ``kernel size``."""
    return str(key).replace("_", " ")


@cache
def environment() -> jinja2.Environment:
    """The shared jinja2 environment: package templates, autoescaping, strict undefined."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("satadvisor.report", "templates"),
        autoescape=jinja2.select_autoescape(["html"], default=True),
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(
        count=fmt_count,
        ratio=fmt_ratio,
        change=fmt_change,
        fraction=fmt_fraction,
        percent=fmt_percent,
        seconds=fmt_seconds,
        value=fmt_value,
        label=fmt_label,
        script_json=script_json,
    )
    return env


def _static(name: str) -> str:
    return resources.files("satadvisor.report").joinpath("static").joinpath(name).read_text("utf-8")


def render_page(template: str, context: Mapping[str, Any], *, single_file: bool = False) -> str:
    """Render a page template; the shared CSS and JS are inlined (no network).

    ``single_file``: plotly.js is inlined too (about 5 MB), so the page is the whole report and
    opens without its folder; otherwise it loads ``plotly.min.js`` from beside it.
    """
    page = environment().get_template(template)
    # Our own static files and the installed plotly bundle, not user input: inserted verbatim.
    return page.render(
        **context,
        css=Markup(_static("report.css")),
        js=Markup(_static("report.js")),
        plotly_js=PLOTLY_JS,
        plotly_inline=Markup(_inline_script(plotly_js())) if single_file else None,
    )


def _inline_script(code: str) -> str:
    """JavaScript made safe between ``<script>`` tags: ``</script`` (in a string or regular
    expression: the only places minified code can hold it) becomes ``<\\/script``."""
    return re.sub(r"</(script)", r"<\\/\1", code, flags=re.IGNORECASE)


def plotly_js() -> str:
    """The plotly.js bundle of the installed plotly package (about 5 MB)."""
    from plotly.offline import get_plotlyjs

    return str(get_plotlyjs())


def write_bundle(
    out_dir: str | os.PathLike[str], files: Mapping[str, str], *, single_file: bool = False
) -> Path:
    """Write ``files`` (name → text) and ``plotly.min.js`` into ``out_dir`` as one atomic swap
    (``single_file``: without ``plotly.min.js``, which the page then holds itself).

    Returns ``out_dir/index.html``. Raises :class:`~satadvisor.errors.OutputError` when the
    directory cannot be written; the previous contents then stay as they were.
    """
    with staged_dir(out_dir) as stage:
        for name, text in files.items():
            (stage / name).write_text(text, encoding="utf-8")
        if not single_file:
            (stage / PLOTLY_JS).write_text(plotly_js(), encoding="utf-8")
    return Path(out_dir) / "index.html"
