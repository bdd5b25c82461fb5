"""Notebook 02's panel: an `EmbeddingMap` with its controls (projection and its parameters, colour,
similarity to a text, texts placed in the map) and the grid of the images selected on it.

The map does the work (`clipspace.maps.embedding_map.EmbeddingMap`: reproject, color_by,
color_by_query, add_texts, selection_grid); this panel only wires controls to those calls.

    panel = MapPanel(emap)                          # display(panel)
    panel.controls.method.value = "umap"            # what the dropdown does: the same figure moves
"""
from __future__ import annotations

from types import SimpleNamespace

import ipywidgets as W

from clipspace.figures import png_bytes
from clipspace.notebook.widgets import Panel, error_output, figure_panel, guarded, save_button

METHODS = [("PCA", "pca"), ("t-SNE", "tsne"), ("UMAP", "umap")]


class MapPanel(Panel):
    """`controls`: method, whiten, perplexity, n_neighbors, min_dist, colour, query, new_texts, add, clear.
    `output` shows errors and notes; `selection` and `summary` show what is selected on the map."""

    def __init__(self, emap, colour: str | None = None):
        self.emap = emap
        columns = [c for c in emap.points.columns if c not in ("caption", "x", "y", "text")]
        c = self.controls = SimpleNamespace(
            method=W.Dropdown(options=METHODS, value="pca", description="projection", layout=W.Layout(width="210px")),
            whiten=W.Checkbox(value=False, description="whiten", indent=False, layout=W.Layout(width="90px")),
            perplexity=W.IntSlider(value=30, min=5, max=80, description="perplexity", continuous_update=False),
            n_neighbors=W.IntSlider(value=15, min=2, max=80, description="neighbours", continuous_update=False),
            min_dist=W.FloatSlider(value=0.1, min=0.0, max=0.99, step=0.05, description="min dist",
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
                       "umap": {"n_neighbors": c.n_neighbors, "min_dist": c.min_dist}}
        self.output = error_output()
        self.selection, self.summary = W.Image(format="png", layout=W.Layout(max_width="100%")), W.HTML()
        self.selection_image = None
        on = guarded(self.output)
        for w in (c.method, c.whiten, c.perplexity, c.n_neighbors, c.min_dist):
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
        self.show_selection([])
        controls = W.VBox([W.HBox([c.method, c.whiten, c.perplexity, c.n_neighbors, c.min_dist]),
                           W.HBox([c.colour, c.query]), W.HBox([c.new_texts, c.add, c.clear])])
        self.widget = W.VBox([figure_panel(emap.widget(), [controls], self.output,
                                           save=save_button(emap.to_figure, "embedding_map", self.output)),
                              self.summary, self.selection])

    def _show_params(self) -> None:  # only the chosen method's parameters are on screen
        for name, controls in self.params.items():
            for w in controls.values():
                w.layout.display = None if name == self.controls.method.value else "none"

    def reproject(self) -> None:
        method = self.controls.method.value
        self._show_params()
        self.emap.reproject(method, **{k: w.value for k, w in self.params[method].items()})

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
        column = self.emap.coloured_by if self.emap.coloured_by in self.emap.points.columns else "kind"
        counts = self.emap.points[column].iloc[indices].astype(str).value_counts()
        self.summary.value = (f"<b>{len(indices)} images selected</b> (first 64 shown). {column}: "
                              + ", ".join(f"{k} {v}" for k, v in counts.items()))
        self.selection_image = self.emap.selection_grid(max_images=64, ncols=16)
        self.selection.value = png_bytes(self.selection_image)

    def figures(self) -> dict:
        out = {"embedding_map": self.emap.to_figure()}
        if self.selection_image is not None:
            out["embedding_map_selection"] = self.selection_image
        return out
