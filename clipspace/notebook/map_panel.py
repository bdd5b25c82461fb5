"""Notebook 02's panel: an `EmbeddingMap` with its controls (projection and its parameters, colour,
similarity to a text, texts placed in the map) and the grid of the images selected on it.

The map does the work (`clipspace.maps.embedding_map.EmbeddingMap`: reproject, color_by,
color_by_query, add_texts, selection_grid); this panel only wires controls to those calls.

    panel = MapPanel(emap)                          # display(panel)
    panel.controls.method.value = "umap"            # what the dropdown does: the same figure moves

Big maps (more than SCATTER_THRESHOLD points, the jupyter-scatter ones): a full t-SNE or UMAP would
take hours there (scikit-learn's t-SNE on a million points does not finish on a laptop), so the
dropdown offers PCA and the sampled projections instead (`SampledProjection`: UMAP, or openTSNE's
t-SNE, fitted on a seeded sample, every other point placed by its nearest sample points), with a
sample-size slider, and `status` says how many points the fit saw. `big=True/False` overrides the
size rule. Full fits stay one call away from code: `emap.reproject("tsne")`.
"""
from __future__ import annotations

from types import SimpleNamespace

import ipywidgets as W

from clipspace.figures import png_bytes
from clipspace.notebook.widgets import Panel, error_output, figure_panel, guarded, save_button

NAMES = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP", "opentsne": "t-SNE (openTSNE)"}
METHODS = [(NAMES[m], m) for m in ("pca", "tsne", "umap")]
# maps above SCATTER_THRESHOLD points: only what fits in seconds to a minute there
BIG_METHODS = [("PCA", "pca")] + [(f"{NAMES[b]}, on a sample", f"sampled-{b}") for b in ("umap", "opentsne")]
SAMPLE_SIZE = 10_000  # the sample-size slider's start (SampledProjection's default)
SAMPLE_STEP, SAMPLE_MAX = 500, 200_000


class MapPanel(Panel):
    """`controls`: method, whiten, perplexity, n_neighbors, min_dist, sample_size, colour, query,
    new_texts, add, clear. `output` shows errors and notes; `status` what the map's projection is
    (for a sampled one, its sample size); `selection` and `summary` what is selected on the map.
    `big`: offer the big-map projections (module docstring); None: when the map has more than
    SCATTER_THRESHOLD points."""

    def __init__(self, emap, colour: str | None = None, big: bool | None = None):
        from clipspace.maps import embedding_map

        self.emap = emap
        n = len(emap.points)
        self.big = n > embedding_map.SCATTER_THRESHOLD if big is None else bool(big)
        methods = BIG_METHODS if self.big else METHODS
        columns = [c for c in emap.points.columns if c not in ("caption", "x", "y", "text")]
        sample_min = min(SAMPLE_STEP, n)
        c = self.controls = SimpleNamespace(
            method=W.Dropdown(options=methods, value=self._method_of(emap.projection, methods),
                              description="projection", layout=W.Layout(width="300px" if self.big else "210px")),
            whiten=W.Checkbox(value=False, description="whiten", indent=False, layout=W.Layout(width="90px")),
            perplexity=W.IntSlider(value=30, min=5, max=80, description="perplexity", continuous_update=False),
            n_neighbors=W.IntSlider(value=15, min=2, max=80, description="neighbours", continuous_update=False),
            min_dist=W.FloatSlider(value=0.1, min=0.0, max=0.99, step=0.05, description="min dist",
                                   continuous_update=False),
            sample_size=W.IntSlider(value=max(sample_min, min(SAMPLE_SIZE, n)), min=sample_min,
                                    max=max(sample_min, min(SAMPLE_MAX, n)), step=SAMPLE_STEP, description="sample",
                                    continuous_update=False),
            colour=W.Dropdown(options=["(none)"] + columns, value=colour if colour in columns else "(none)",
                              description="colour by", layout=W.Layout(width="240px")),
            query=W.Text(placeholder="e.g. a red star  (Enter)", description="similarity to", continuous_update=False,
                         layout=W.Layout(width="300px")),
            new_texts=W.Text(placeholder="texts separated by ;  (Enter)", description="place texts",
                             continuous_update=False, layout=W.Layout(width="360px")),
            add=W.Button(description="Add"), clear=W.Button(description="Clear texts"),
        )
        self.params = {"pca": {"whiten": c.whiten}, "tsne": {"perplexity": c.perplexity},
                       "umap": {"n_neighbors": c.n_neighbors, "min_dist": c.min_dist},
                       "sampled-umap": {"sample_size": c.sample_size, "n_neighbors": c.n_neighbors,
                                        "min_dist": c.min_dist},
                       "sampled-opentsne": {"sample_size": c.sample_size, "perplexity": c.perplexity}}
        self.output = error_output()
        self.status = W.HTML()
        self.selection, self.summary = W.Image(format="png", layout=W.Layout(max_width="100%")), W.HTML()
        self.selection_image = None
        on = guarded(self.output)
        for w in (c.method, c.whiten, c.perplexity, c.n_neighbors, c.min_dist, c.sample_size):
            w.observe(on(lambda _: self.reproject()), names="value")
        c.colour.observe(on(lambda ch: emap.color_by(None if ch["new"] == "(none)" else ch["new"])), names="value")
        c.query.observe(on(lambda ch: self.color_by_query(ch["new"])), names="value")
        c.new_texts.observe(on(lambda _: self.add_texts()), names="value")
        c.add.on_click(on(lambda _: self.add_texts()))
        c.clear.on_click(on(lambda _: emap.clear_texts()))
        emap.on_select(on(self.show_selection))
        if c.colour.value != "(none)":
            emap.color_by(c.colour.value)
        self._show_params()
        self._show_status(emap.projection)
        self.show_selection([])
        controls = W.VBox([W.HBox([c.method, c.whiten, c.perplexity, c.n_neighbors, c.min_dist, c.sample_size]),
                           W.HBox([c.colour, c.query]), W.HBox([c.new_texts, c.add, c.clear]), self.status])
        self.widget = W.VBox([figure_panel(emap.widget(), [controls], self.output,
                                           save=save_button(emap.to_figure, "embedding_map", self.output)),
                              self.summary, self.selection])

    @staticmethod
    def _method_of(projection, methods) -> str:
        """The dropdown entry of the map's projection (built before the panel), else PCA."""
        method = getattr(projection, "method", "")
        if method == "sampled":
            method = f"sampled-{projection.base}"
        return method if method in dict(methods).values() else "pca"

    def _show_params(self) -> None:  # only the chosen method's parameters are on screen
        chosen = self.params[self.controls.method.value].values()
        for controls in self.params.values():
            for w in controls.values():
                w.layout.display = None if any(w is v for v in chosen) else "none"

    def reproject(self) -> None:
        method = self.controls.method.value
        self._show_params()
        values = {k: w.value for k, w in self.params[method].items()}
        if method.startswith("sampled-"):
            proj = self.emap.reproject("sampled", base=method.removeprefix("sampled-"),
                                       sample_size=values.pop("sample_size"), base_params=values)
        else:
            proj = self.emap.reproject(method, **values)
        self._show_status(proj)

    def _show_status(self, projection) -> None:
        """What the map shows now: the method, and for a sampled fit how many points it was fitted on."""
        n, method = len(self.emap.points), getattr(projection, "method", "")
        if method == "sampled":
            self.status.value = (f"{NAMES.get(projection.base, projection.base)} fitted on a seeded sample of "
                                 f"<b>{projection.sample_size_:,}</b> of {n:,} points; the others placed by their "
                                 "nearest sample points")
        else:
            self.status.value = f"{NAMES.get(method, method or 'a projection')} of all {n:,} points"

    def color_by_query(self, text: str) -> None:
        if text.strip():
            sims = self.emap.color_by_query(text.strip())
            print(f"cosine similarity to {text.strip()!r}: {sims.min():.3f} .. {sims.max():.3f}")

    def add_texts(self) -> None:
        self.emap.add_texts([t.strip() for t in self.controls.new_texts.value.split(";") if t.strip()])

    def show_selection(self, indices) -> None:
        """The grid of the selected images and a count per value of the colouring column."""
        if len(indices) == 0:
            self.selection_image = None
            self.selection.value = b""
            self.summary.value = "<i>nothing selected: lasso or box-select points on the map</i>"
            return
        points = self.emap.points
        column = next((c for c in (self.emap.coloured_by, "kind") if c in points.columns), None)
        counts = points[column].iloc[indices].astype(str).value_counts() if column else None
        self.summary.value = (f"<b>{len(indices):,} images selected</b>"
                              + (" (first 64 shown)" if self.emap.thumbnails is not None else "")
                              + (f". {column}: " + ", ".join(f"{k} {v}" for k, v in counts.head(24).items())
                                 if column else ""))
        if self.emap.thumbnails is None:  # a map without images: the count is all there is to show
            self.selection_image, self.selection.value = None, b""
            return
        self.selection_image = self.emap.selection_grid(max_images=64, ncols=16)
        self.selection.value = png_bytes(self.selection_image)

    def figures(self) -> dict:
        out = {"embedding_map": self.emap.to_figure()}
        if self.selection_image is not None:
            out["embedding_map_selection"] = self.selection_image
        return out
