"""The big-map backend of `EmbeddingMap`: jupyter-scatter (anywidget + regl WebGL, made for millions
of points) in place of plotly, keeping the map's behaviour:

- colours: `colour_single`, `colour_categorical(codes, categories, colours)`, `colour_continuous(values)`
  (the map works out codes and values; this only draws them);
- the hovered point goes to the map's Python-side panel (jscatter's `hovering` trait -> show_point);
- a lasso selection comes back to Python (its `selection` trait -> the map's selection callbacks,
  hence the grid), and `select()` from code draws the selection in the browser;
- texts placed on the map are small squares (jscatter annotations: a WebGL canvas draws no text),
  listed by name under the hover panel.

How the colours are set, frankly: jupyter-scatter's `Scatter.color(by=...)` builds its category
table by walking all N rows in Python (0.45 s at a million points) and re-histograms every call.
So the colours are written to the widget's synced traits directly, in the order `Scatter.color`
writes them (colour map, scale, domain, `color_by`, legend, then the points with the data column
in their third component): category codes for categories, values in (0, 1) for continuous scales.
regl-scatterplot calls a column categorical when all its values are integers, so continuous values
are kept strictly inside (0, 1). The `Scatter` object (`.scatter`) built the widget; its own
colour state is not updated by these calls.
"""
from __future__ import annotations

import html
import re

import numpy as np

VIRIDIS_STEPS = 256


def _rgba(colour) -> list[float]:
    """A colour as jscatter's RGBA floats in [0, 1]: "#rrggbb", "rgb(r,g,b)", names, or tuples."""
    from matplotlib.colors import to_rgba

    if isinstance(colour, str):
        m = re.fullmatch(r"\s*rgba?\(([^)]*)\)\s*", colour)
        if m:
            parts = [float(p) for p in m.group(1).split(",")]
            return [parts[0] / 255, parts[1] / 255, parts[2] / 255, parts[3] if len(parts) > 3 else 1.0]
    elif isinstance(colour, (tuple, list)) and max(colour[:3]) > 1:
        return [c / 255 for c in colour[:3]] + [1.0]
    return list(to_rgba(colour))


_VIRIDIS: list[list[float]] = []


def _viridis() -> list[list[float]]:
    if not _VIRIDIS:
        import matplotlib

        _VIRIDIS.extend(matplotlib.colormaps["viridis"](np.linspace(0, 1, VIRIDIS_STEPS)).tolist())
    return _VIRIDIS


class ScatterView:
    """The jupyter-scatter widget of one EmbeddingMap. `widget` is the anywidget (display it, or
    `emap.widget()` for the map with its hover panel); `scatter` the jscatter.Scatter that built it."""

    def __init__(self, emap, height: int = 600, neutral: str = "#4c78a8"):
        import jscatter
        import pandas as pd

        self.emap = emap
        self.neutral = _rgba(neutral)
        xy = pd.DataFrame({"x": emap.points["x"].to_numpy(np.float32), "y": emap.points["y"].to_numpy(np.float32)})
        self.scatter = jscatter.Scatter(data=xy, x="x", y="y", height=height, axes=False, legend=True,
                                        legend_position="top-right", color=self.neutral, opacity=0.8,
                                        lasso_initiator=True)
        self.widget = self.scatter.widget
        # jscatter sizes its canvas to 100% of its element, which in the map's HBox (beside the hover
        # panel) has no width of its own: a 1 px canvas. Let it take the row's free width instead.
        self.widget.layout.flex = "1 1 0%"
        self.widget.layout.min_width = "320px"
        self.widget.mouse_mode = "lasso"  # a drag selects, as plotly's dragmode="lasso" does
        # the normalised coordinates jscatter computed, kept to rewrite the third (data) component
        self._points = np.asarray(self.widget.points, dtype=np.float32).copy()
        self.widget.observe(self._on_selection, names="selection")
        self.widget.observe(self._on_hover, names="hovering")
        self._setting_selection = False

    # --- browser -> Python ------------------------------------------------------------------------
    def _on_selection(self, change) -> None:
        new = change["new"]
        self.emap._set_selection([] if new is None else np.asarray(new, dtype=np.int64))

    def _on_hover(self, change) -> None:
        if change["new"] is not None and change["new"] >= 0:
            self.emap.show_point(int(change["new"]))

    # --- Python -> browser ------------------------------------------------------------------------
    def select(self, indices: np.ndarray) -> None:
        """Draw a selection made from code; the `selection` observer then runs the map's callbacks."""
        new = np.asarray(indices, dtype=np.uint32)
        if np.array_equal(new, self.widget.selection if self.widget.selection is not None else []):
            self.emap._set_selection(new.astype(np.int64))  # unchanged trait: no event, callbacks still run
        else:
            self.widget.selection = new

    def set_xy(self, x: np.ndarray, y: np.ndarray) -> None:
        """New coordinates (reproject): jscatter rescales them and redraws."""
        self.scatter.xy(np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.float32))
        self._points[:, :2] = np.asarray(self.widget.points, dtype=np.float32)[:, :2]

    def _send(self, colour, scale, domain, title, legend, data) -> None:
        w = self.widget
        if w.color != colour:  # validating a 256-colour list costs ~20 ms: only when it changes
            w.color = colour
        w.color_scale = scale
        w.color_domain = domain
        w.color_by = None if data is None else "valueA"
        w.color_title = title
        w.legend_encoding = {"color": legend} if legend else {}
        if data is not None:
            pts = self._points.copy()
            pts[:, 2] = data
            w.prevent_filter_reset = True
            w.non_spatial_points_update = True  # the JS keeps its spatial index: only colours changed
            w.points = pts

    def colour_single(self) -> None:
        self._send(self.neutral, None, None, None, None, None)

    def colour_categorical(self, codes: np.ndarray, categories: list[str], colours: list, title: str) -> None:
        rgba = [_rgba(c) for c in colours]
        legend = {"variable": title, "values": [[c, rgba[i], None] for i, c in enumerate(categories)],
                  "categorical": True, "data_dimension": "valueA"}
        self._send(rgba, "categorical", {c: i for i, c in enumerate(categories)}, title, legend,
                   np.asarray(codes, dtype=np.float32))

    def colour_continuous(self, values: np.ndarray, title: str) -> None:
        values = np.asarray(values, dtype=np.float32)
        lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
        span = hi - lo if hi > lo else 1.0
        # strictly inside (0, 1): the middle of the first to the middle of the last colour step
        half = 0.5 / VIRIDIS_STEPS
        scaled = half + (1 - 2 * half) * np.nan_to_num((values - lo) / span, nan=0.0)
        cmap = _viridis()
        legend = {"variable": title, "values": [[lo + f * (hi - lo), cmap[round(f * (VIRIDIS_STEPS - 1))], None]
                                               for f in np.linspace(0, 1, 5)],
                  "categorical": False, "data_dimension": "valueA"}
        self._send(cmap, "linear", [lo, hi], title, legend, scaled.astype(np.float32))

    def colour_data(self) -> np.ndarray | None:
        """The colour component of the points as the widget holds it (None with one colour)."""
        return None if self.widget.color_by is None else np.asarray(self.widget.points)[:, 2].copy()

    def draw_texts(self, texts) -> None:
        """Each text point as a small square (about 1.5% of the map's extent) in black."""
        import jscatter

        x, y = self.emap.points["x"].to_numpy(), self.emap.points["y"].to_numpy()
        r = 0.0075 * max(float(np.ptp(x)), float(np.ptp(y)), 1e-6)
        boxes = [jscatter.Rect(x_start=float(tx) - r, x_end=float(tx) + r, y_start=float(ty) - r, y_end=float(ty) + r,
                               line_color="#000000", line_width=2)
                 for tx, ty in zip(texts["x"].to_numpy(), texts["y"].to_numpy())]
        self.scatter.annotations(boxes or None)

    def texts_html(self, texts) -> str:
        if not len(texts):
            return ""
        return "<b>texts</b> (squares): " + ", ".join(html.escape(str(t)) for t in texts["text"])
