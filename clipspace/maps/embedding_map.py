"""Embedding maps: the images (and texts) of one embedding space as points on a 2-D plotly map that
can be recoloured, queried and lasso-selected without refitting the projection.

    emap = EmbeddingMap.build(image_emb, images=pictures, table=scene_table(scenes), projection="tsne", clip=clip)
    display(emap.widget())                 # the FigureWidget, with the hovered image beside it
    emap.color_by("shape")                 # any column of emap.points
    emap.color_by_query("a red circle")    # cosine similarity to a text, continuous colours
    emap.add_texts(["a red circle"])       # text points placed by projection.transform
    emap.selected(); emap.selection_grid() # what the lasso / box picked

Every update changes the existing figure in place (one batch_update of marker colours or of the
text trace); the fitted projection and the image coordinates never change after `build`.

Hover thumbnails. A plotly hover label cannot show an image (hovertemplate renders no <img>), so:
- in a notebook, the FigureWidget's on_hover callback puts the hovered image into an
  ipywidgets.Image beside the map (`widget()`);
- in a static HTML file (`write_html`), each image point carries its thumbnail as a base64 PNG data
  URI in customdata, and a few lines of JS (plotly's post_script) show it in a floating <img> on
  plotly_hover. No server (Dash) is needed for either.

Points are drawn with WebGL (go.Scattergl), so maps of 10,000+ images stay smooth.

Big maps. Above SCATTER_THRESHOLD points (or with backend="scatter") the widget is jupyter-scatter
(clipspace.maps.scatter_backend) instead of plotly: same calls, same hover panel, same selection
callbacks and grid; `figure` is then None and `scatter` holds the view. Thumbnails are then loaded
on demand (hover, grid), not all at build time, and a text query multiplies a float16 copy of the
unit embeddings (half the memory traffic of float32; similarities within about 1e-3 of the exact
ones). `to_figure` / `write_html` of a big map draw a seeded random subsample of STATIC_MAX_POINTS
points (plotly files of a million points are 100s of MB and unusable); pass max_points to change it.
`EmbeddingMap.build(corpus)` takes a clipspace Corpus (or anything with `.embeddings` and `.table`):
its table's columns become colour choices and its `path` column the images.

The modality gap: `modality_gap(image_emb, text_emb)` measures how far apart the two modalities sit
(centroid distance, mean cosine within and between). On the map, fit on both (`fit_texts=True`) to
see it with t-SNE/UMAP; PCA shows it either way (see clipspace.maps.projections on placing new points).
"""
from __future__ import annotations

import base64
import html
import io
import re
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import plotly.colors
import plotly.graph_objects as go
from PIL import Image

from clipspace.maps.projections import Projection, ProjectionCache, fit_projection
from clipspace.notebook.widgets import FigureWidget

IMAGE_TRACE, TEXT_TRACE, FIRST_KEY_TRACE = 0, 1, 2
SCATTER_THRESHOLD = 50_000  # backend="auto": jupyter-scatter above this many points (plotly's hover lags past ~100k)
STATIC_MAX_POINTS = 50_000  # to_figure / write_html of a bigger map draw a seeded subsample of this size
BACKENDS = ("auto", "plotly", "scatter")
MAX_KEYS = 24  # legend entries for categorical colours; more categories share "+ n more"
MAX_CATEGORIES = 40  # a numeric column with more distinct values is coloured on a continuous scale
PALETTE = plotly.colors.qualitative.Dark24 + plotly.colors.qualitative.Light24
NEUTRAL = "#4c78a8"

# Shows customdata[1] (a data URI) in a floating <img> while a point is hovered: for write_html.
HOVER_JS = """
(function () {
  var gd = document.getElementById('{plot_id}');
  var img = document.createElement('img');
  img.className = 'clipspace-hover-thumb';
  img.style.cssText = 'position:fixed;display:none;pointer-events:none;z-index:1000;width:128px;' +
    'height:128px;image-rendering:pixelated;border:1px solid #888;background:#fff';
  document.body.appendChild(img);
  gd.on('plotly_hover', function (ev) {
    var p = ev.points.filter(function (q) { return q.customdata && q.customdata[1]; })[0];
    if (!p) { img.style.display = 'none'; return; }
    var e = ev.event || {};
    img.src = p.customdata[1];
    img.style.left = ((e.clientX || 0) + 16) + 'px';
    img.style.top = ((e.clientY || 0) + 16) + 'px';
    img.style.display = 'block';
  });
  gd.on('plotly_unhover', function () { img.style.display = 'none'; });
})();
"""


def _normalise(X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    return X / np.maximum(np.linalg.norm(X, axis=-1, keepdims=True), 1e-12)


# ---------------------------------------------------------------------------------------------
# The modality gap
# ---------------------------------------------------------------------------------------------
def _mean_offdiag_cos(U: np.ndarray) -> float:
    n = len(U)  # unit rows: sum_ij u_i.u_j = |sum u|^2, and the diagonal adds n
    return float((np.sum(U.sum(0) ** 2) - n) / (n * (n - 1)))


def modality_gap(image_emb, text_emb) -> dict:
    """How far apart images and texts sit in a joint embedding space (rows are L2-normalised first).

    centroid_distance: |mean(images) - mean(texts)| (Liang et al. 2022, "Mind the Gap"); 0 when the
    two clouds share a centre, up to 2. image_image_cos / text_text_cos: mean cosine between distinct
    rows of one modality; image_text_cos: mean cosine over all image-text pairs. A gap shows as
    within-modality cosines well above the between-modality one.
    """
    I, T = _normalise(image_emb), _normalise(text_emb)
    for name, A in (("image_emb", I), ("text_emb", T)):
        if A.ndim != 2 or len(A) < 2:
            raise ValueError(f"modality_gap: {name} must be a 2-D array with at least 2 rows, got shape {A.shape}")
    if I.shape[1] != T.shape[1]:
        raise ValueError(f"modality_gap: image_emb has {I.shape[1]} dims, text_emb {T.shape[1]}; "
                         "embed both with the same model")
    return {"centroid_distance": float(np.linalg.norm(I.mean(0) - T.mean(0))),
            "image_image_cos": _mean_offdiag_cos(I), "text_text_cos": _mean_offdiag_cos(T),
            "image_text_cos": float(I.mean(0) @ T.mean(0)),  # = mean of all pairwise cosines
            "n_images": len(I), "n_texts": len(T)}


# ---------------------------------------------------------------------------------------------
# Tables of points
# ---------------------------------------------------------------------------------------------
def _kind(scene) -> str:
    objs = scene.objects
    if not objs:
        return "word" if scene.text is not None else "empty"
    if len(objs) == 1:
        return "object+word" if scene.text is not None else "object"
    if len({(o.shape, o.colour) for o in objs}) == 1:
        return "count"
    return "pair" if len(objs) == 2 else "objects"


def scene_table(scenes: Sequence) -> pd.DataFrame:
    """One row per world scene with its factors: caption, kind, count, shape/colour/size of the first
    object ("none" without one), background, written word ("" without one), relation (pairs only)."""
    rows = []
    for s in scenes:
        first = s.objects[0] if s.objects else None
        rows.append({"caption": s.caption(0), "kind": _kind(s), "count": s.count,
                     "shape": first.shape if first else "none", "colour": first.colour if first else "none",
                     "size": first.size if first else "none", "background": s.background,
                     "word": s.text.word if s.text is not None else "",
                     "relation": s.relation() if _kind(s) == "pair" else ""})
    return pd.DataFrame(rows)


def cluster_labels(emb, n_clusters: int = 8, random_state: int = 0) -> np.ndarray:
    """k-means clusters of L2-normalised embeddings (spherical k-means, near enough): one int per row."""
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=n_clusters, n_init=4, random_state=random_state).fit_predict(_normalise(emb))


def _thumbnail(source, size: int) -> Image.Image:
    from clipspace.images import load_image

    im = load_image(source).copy()
    im.thumbnail((size, size))
    return im


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _discrete_scale(colours: list[str]) -> list:
    n = len(colours)  # code i -> (i + 0.5) / n with cmin=-0.5, cmax=n-0.5: the middle of step i
    return [pair for i, c in enumerate(colours) for pair in ([i / n, c], [(i + 1) / n, c])]


# ---------------------------------------------------------------------------------------------
# The map
# ---------------------------------------------------------------------------------------------
class EmbeddingMap:
    """A fitted 2-D map of image embeddings, with its table, thumbnails, texts and FigureWidget.

    Attributes: `projection` (fitted), `points` (DataFrame, one row per image: the table's columns
    plus x, y), `texts` (DataFrame: text, x, y, fitted), `image_emb`, `text_emb`, `thumbnails` (PIL
    images or None), `figure` (go.FigureWidget: trace 0 images, trace 1 texts, then legend keys),
    `hover_image` / `hover_label` (widgets showing the hovered point), `clip` (for text queries),
    `coloured_by` (what the colours show now). Make one with `EmbeddingMap.build`.
    """

    def __init__(self, projection: Projection, image_emb: np.ndarray, points: pd.DataFrame,
                 thumbnails: Sequence[Image.Image] | None = None, clip=None, hover: str | None = None,
                 title: str = "", backend: str = "plotly"):
        self.projection = projection
        self.image_emb = image_emb
        self.points = points
        self.thumbnails = thumbnails
        self.clip = clip
        self.hover = hover
        self.texts = pd.DataFrame({"text": pd.Series(dtype=str), "x": pd.Series(dtype=np.float32),
                                   "y": pd.Series(dtype=np.float32), "fitted": pd.Series(dtype=bool)})
        self.text_emb = np.zeros((0, image_emb.shape[1]), dtype=np.float32)
        self.coloured_by: str | None = None
        self.cache: ProjectionCache | None = None  # reproject() fits through it (build sets it)
        self._selected = np.zeros(0, dtype=int)
        self._select_callbacks: list[Callable[[np.ndarray], None]] = []
        self._png: dict[int, bytes] = {}
        self._query_matrix = None  # unit embeddings for color_by_query, built on the first query
        self.backend = backend
        self._make_hover_panel()
        if backend == "scatter":
            from clipspace.maps.scatter_backend import ScatterView

            self.figure, self.scatter = None, ScatterView(self, neutral=NEUTRAL)
        else:
            self.figure, self.scatter = self._make_figure(title), None

    # --- building ---------------------------------------------------------------------------------
    @classmethod
    def build(cls, image_emb, images: Sequence | None = None, table: pd.DataFrame | None = None,
              projection: Projection | str = "pca", *, texts: Sequence[str] = (), text_emb=None, clip=None,
              fit_texts: bool = False, cache: ProjectionCache | None = None, thumb_size: int = 64,
              hover: str | None = None, title: str = "", backend: str = "auto", **params) -> "EmbeddingMap":
        """Fit (or fetch from `cache`) a projection of `image_emb` and draw the map.

        images: one per row (paths, PIL images or arrays), shown on hover and in selection_grid.
        table: one row per image (world factors, labels...); columns become colour choices.
        projection: a Projection, or "pca" | "umap" | "tsne" with `params`.
        texts / text_emb: text points to draw too (embedded with `clip` when text_emb is None);
          with fit_texts=True they are fitted together with the images (the modality gap shows in
          t-SNE/UMAP too), else placed by projection.transform.
        hover: the column shown on hover (default: "caption" when there is one).
        image_emb may be a Corpus (anything with `.embeddings` and `.table`): the table comes from it
          unless given, and the images from its `path` column.
        backend: "plotly", "scatter" (jupyter-scatter) or "auto" (scatter above SCATTER_THRESHOLD points).
        """
        if hasattr(image_emb, "embeddings") and hasattr(image_emb, "table"):  # a Corpus, duck-typed
            corpus = image_emb
            table = corpus.table if table is None else table
            if images is None and "path" in corpus.table.columns:
                images = corpus.table["path"].tolist()
            image_emb = corpus.embeddings
        image_emb = np.asarray(image_emb, dtype=np.float32)  # a float32 memmap stays a memmap: no copy
        n = len(image_emb)
        if image_emb.ndim != 2 or n < 2:
            raise ValueError(f"EmbeddingMap.build: image_emb must be (n_images >= 2, dim), got shape {image_emb.shape}")
        table = pd.DataFrame(index=range(n)) if table is None else pd.DataFrame(table).reset_index(drop=True)
        if len(table) != n:
            raise ValueError(f"EmbeddingMap.build: table has {len(table)} rows for {n} image embeddings; "
                             "give one row per image")
        if images is not None and len(images) != n:
            raise ValueError(f"EmbeddingMap.build: {len(images)} images for {n} image embeddings; give one per row")
        if backend not in BACKENDS:
            raise ValueError(f"EmbeddingMap.build: backend={backend!r}; choose from {BACKENDS}")
        if backend == "auto":
            backend = "scatter" if n > SCATTER_THRESHOLD else "plotly"
        clash = {"x", "y"} & set(table.columns)
        if clash:
            raise ValueError(f"EmbeddingMap.build: table columns {sorted(clash)} are reserved for map coordinates; "
                             "rename them")
        texts = list(texts)
        if texts and text_emb is None:
            text_emb = cls._embed_texts(clip, texts)
        text_emb = None if text_emb is None else np.asarray(text_emb, dtype=np.float32).reshape(len(texts), -1)

        fit_on = np.vstack([image_emb, text_emb]) if fit_texts and texts else image_emb
        proj = fit_projection(projection, fit_on, cache=cache, **params)
        points = table.copy()
        points["x"], points["y"] = proj.embedding_[:n, 0], proj.embedding_[:n, 1]
        if images is None:
            thumbs = None
        elif backend == "scatter":
            thumbs = LazyThumbnails(images, thumb_size)  # a million images are never all loaded
        else:
            thumbs = [_thumbnail(im, thumb_size) for im in images]
        if hover is None and "caption" in points.columns:
            hover = "caption"
        emap = cls(proj, image_emb, points, thumbs, clip, hover, title, backend=backend)
        emap.cache = cache
        if texts:
            coords = proj.embedding_[n:] if fit_texts else None
            emap.add_texts(texts, text_emb, _coords=coords)
        return emap

    @staticmethod
    def _embed_texts(clip, texts: list[str]) -> np.ndarray:
        if clip is None:
            raise ValueError("texts were given without embeddings: pass text_emb=..., or clip=<a ClipModel> "
                             "(clipspace.load_clip()) to embed them")
        return np.asarray(clip.encode_texts(texts), dtype=np.float32)

    def _make_figure(self, title: str) -> go.FigureWidget:
        pts = self.points
        hover_text = (pts[self.hover].astype(str) if self.hover else pd.Series(pts.index.astype(str))).tolist()
        images = go.Scattergl(x=pts["x"].to_numpy(), y=pts["y"].to_numpy(), mode="markers", name="images",
                              marker=dict(size=7, color=NEUTRAL, opacity=0.85, line=dict(width=0)),
                              customdata=np.arange(len(pts)), text=hover_text, showlegend=False,
                              hovertemplate="%{text}<extra>image %{customdata}</extra>")
        texts = go.Scattergl(x=[], y=[], mode="markers+text", name="texts", text=[], textposition="top center",
                             marker=dict(symbol="diamond", size=13, color="black", line=dict(width=1.5, color="white")),
                             textfont=dict(size=12, color="black"), hovertemplate="text: %{text}<extra></extra>")
        keys = [go.Scattergl(x=[None], y=[None], mode="markers", visible=False, showlegend=True, hoverinfo="skip",
                             marker=dict(size=9, color=NEUTRAL), name="") for _ in range(MAX_KEYS)]
        fig = FigureWidget([images, texts, *keys])  # opened with its data: no blank axes
        fig.update_layout(template="plotly_white", title=title or None, dragmode="lasso", uirevision="map",
                          height=600, margin=dict(l=10, r=10, t=40 if title else 10, b=10),
                          legend=dict(itemsizing="constant"),
                          xaxis=dict(showticklabels=False, zeroline=False, title=None),
                          yaxis=dict(showticklabels=False, zeroline=False, title=None))
        fig.data[IMAGE_TRACE].on_hover(self._on_hover)
        fig.data[IMAGE_TRACE].on_selection(self._on_selection)
        fig.data[IMAGE_TRACE].on_deselect(self._on_deselect)
        return fig

    def _make_hover_panel(self) -> None:
        import ipywidgets as widgets

        self.hover_image = widgets.Image(format="png", width=160, height=160,
                                         layout=widgets.Layout(width="160px", height="160px",
                                                               border="1px solid #ddd", object_fit="contain",
                                                               display="none"))  # no picture yet: no broken icon
        self.hover_label = widgets.HTML("<i>hover a point</i>", layout=widgets.Layout(width="180px"))
        self.texts_label = widgets.HTML("", layout=widgets.Layout(width="180px"))

    def widget(self):
        """The map with the hovered image and its row beside it (an ipywidgets HBox)."""
        import ipywidgets as widgets

        view = self.figure if self.scatter is None else self.scatter.widget
        side = [self.hover_image, self.hover_label] + ([self.texts_label] if self.scatter is not None else [])
        return widgets.HBox([view, widgets.VBox(side)], layout=widgets.Layout(width="100%"))

    # --- another projection -----------------------------------------------------------------------
    def reproject(self, projection: Projection | str, cache: ProjectionCache | None = None, **params) -> Projection:
        """Move every point to a new projection of the same embeddings, in place: fit (or fetch from
        `cache`, default the one the map was built with) on the images plus the texts that were fitted
        with them, place the other texts with its transform, and update the figure's coordinates in
        one batch_update. Colours, selection and the table's other columns stay. Returns the projection."""
        cache = cache if cache is not None else self.cache
        fitted = self.texts["fitted"].to_numpy(dtype=bool)
        fit_on = np.vstack([self.image_emb, self.text_emb[fitted]]) if fitted.any() else self.image_emb
        proj = fit_projection(projection, fit_on, cache=cache, **params)
        n = len(self.image_emb)
        text_xy = np.zeros((len(self.texts), 2), dtype=np.float32)
        text_xy[fitted] = proj.embedding_[n:, :2]
        if (~fitted).any():
            text_xy[~fitted] = proj.transform(self.text_emb[~fitted])[:, :2]
        self.projection = proj
        self.points["x"], self.points["y"] = proj.embedding_[:n, 0], proj.embedding_[:n, 1]
        self.texts["x"], self.texts["y"] = text_xy[:, 0], text_xy[:, 1]
        if self.scatter is not None:
            self.scatter.set_xy(self.points["x"].to_numpy(), self.points["y"].to_numpy())
            self._draw_texts()
            return proj
        with self.figure.batch_update():
            trace = self.figure.data[IMAGE_TRACE]
            trace.x, trace.y = self.points["x"].to_numpy(), self.points["y"].to_numpy()
            self._draw_texts()
        return proj

    # --- hover ------------------------------------------------------------------------------------
    def thumbnail_png(self, i: int) -> bytes | None:
        """PNG bytes of image i's thumbnail (encoded once), or None without images."""
        if self.thumbnails is None:
            return None
        if i not in self._png:
            self._png[i] = _png(self.thumbnails[i])
        return self._png[i]

    def show_point(self, i: int) -> None:
        """Show image i and its row in the hover panel (what hovering does)."""
        png = self.thumbnail_png(int(i))
        if png is not None:
            self.hover_image.value = png
        # an Image widget without a picture draws the browser's broken-image icon: hide it instead
        self.hover_image.layout.display = None if png is not None else "none"
        row = self.points.iloc[int(i)].drop(["x", "y"])
        self.hover_label.value = f"<b>image {int(i)}</b><br>" + "<br>".join(
            f"{html.escape(str(k))}: {html.escape(str(v))}" for k, v in row.items())

    def _on_hover(self, trace, points, state) -> None:
        if points.point_inds:
            self.show_point(points.point_inds[0])

    # --- selection --------------------------------------------------------------------------------
    def _on_selection(self, trace, points, selector) -> None:
        self._set_selection(points.point_inds)

    def _on_deselect(self, trace, points) -> None:
        self._set_selection([])

    def _set_selection(self, indices) -> None:
        self._selected = np.unique(np.asarray(list(indices), dtype=int))
        for callback in self._select_callbacks:
            callback(self._selected)

    def select(self, indices) -> None:
        """Select images by row index from code (as a lasso would); [] clears the selection."""
        indices = np.asarray(list(indices), dtype=int)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self.points)):
            raise IndexError(f"select: indices must be in [0, {len(self.points)}), got {indices.min()}..{indices.max()}")
        if self.scatter is not None:
            self.scatter.select(np.unique(indices))  # its `selection` observer runs the callbacks
            return
        self.figure.data[IMAGE_TRACE].selectedpoints = indices.tolist() if indices.size else None
        self._set_selection(indices)

    def on_select(self, callback: Callable[[np.ndarray], None]) -> None:
        """Call `callback(indices)` after every selection change (lasso, box, double-click, select())."""
        self._select_callbacks.append(callback)

    def selected(self) -> np.ndarray:
        """Row indices (into `points`) of the images selected with the lasso or box, sorted."""
        return self._selected.copy()

    def selection_grid(self, max_images: int = 64, ncols: int = 8, titles: str | None = None,
                       scale: int = 1) -> Image.Image | None:
        """A grid (PIL image) of the selected images, the first `max_images` of them; None when
        nothing is selected. `titles`: a column of `points` to write under each image."""
        if self.thumbnails is None:
            raise ValueError("selection_grid: this map has no images; build it with images=...")
        idx = self._selected[:max_images]
        if idx.size == 0:
            return None
        from clipspace.figures import image_grid

        caps = self.points[titles].astype(str).iloc[idx].tolist() if titles else None
        return image_grid([self.thumbnails[i] for i in idx], ncols=ncols, titles=caps, scale=scale)

    # --- colours ----------------------------------------------------------------------------------
    def color_by(self, column: str | None, palette: dict | Sequence[str] | None = None) -> None:
        """Colour the image points by a column of `points` (None: one colour). Numeric columns with
        many values get a continuous scale, the rest one colour per category with a legend.
        `palette`: {category: colour} (e.g. clipspace.world.COLOURS) or a list of colours."""
        if column is None:
            if self.scatter is not None:
                self.scatter.colour_single()
            else:
                self._apply_colours(NEUTRAL, None)
            self.coloured_by = None
            return
        if column not in self.points.columns:
            raise KeyError(f"color_by: no column {column!r}; choose from {sorted(self.points.columns)}")
        values = self.points[column]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values) \
                and more_distinct_than(values, MAX_CATEGORIES):
            self._continuous(values.to_numpy(dtype=float), column)
        else:
            self._categorical(values, palette, column)
        self.coloured_by = column

    def color_by_query(self, query, clip=None) -> np.ndarray:
        """Colour images by cosine similarity to a text query: a string or list of strings (embedded
        with `clip`, or the map's clip; a list is averaged, like a prompt ensemble) or an embedding.
        Returns the similarities, also stored as points["query_similarity"]."""
        if isinstance(query, str) or (isinstance(query, (list, tuple)) and query and isinstance(query[0], str)):
            texts = [query] if isinstance(query, str) else list(query)
            q = self._embed_texts(clip or self.clip, texts).mean(0)
            label = texts[0] if len(texts) == 1 else f"{texts[0]} (+{len(texts) - 1})"
        else:
            q, label = np.asarray(query, dtype=np.float32).reshape(-1), "query"
        if q.shape != (self.image_emb.shape[1],):
            raise ValueError(f"color_by_query: the query embedding has shape {q.shape}, the images "
                             f"{self.image_emb.shape[1]} dims; embed it with the same model")
        sims = self._similarities(q)
        self.points["query_similarity"] = sims
        self._continuous(sims, f"cos sim to<br>{html.escape(label[:40])}")
        self.coloured_by = f"query: {label}"
        return sims

    def _similarities(self, q: np.ndarray) -> np.ndarray:
        """Cosine of every image with q: exact (float64) for plotly-sized maps; for big maps a float16
        copy of the unit rows, made once, multiplied by torch (see the module docstring)."""
        if self.scatter is None:
            return (_normalise(self.image_emb) @ _normalise(q)).astype(np.float32)
        import torch

        if self._query_matrix is None:
            from clipspace.maps.projections import unit_rows

            M = torch.empty(self.image_emb.shape, dtype=torch.float16)
            for s in range(0, len(M), 65536):
                M[s:s + 65536] = torch.from_numpy(unit_rows(self.image_emb[s:s + 65536]))
            self._query_matrix = M
        qn = torch.from_numpy(_normalise(q).astype(np.float32)).to(torch.float16)
        return torch.mv(self._query_matrix, qn).float().numpy()

    def _continuous(self, values: np.ndarray, title: str) -> None:
        if self.scatter is not None:
            self.scatter.colour_continuous(values, re.sub(r"<br>", " ", title))
            return
        marker = dict(color=values, colorscale="Viridis", cmin=float(np.nanmin(values)),
                      cmax=float(np.nanmax(values)), showscale=True, colorbar=dict(title=dict(text=title)))
        self._apply_colours(None, marker)

    def _categorical(self, values: pd.Series, palette, title: str = "") -> None:
        codes, cats = category_codes(values)
        if isinstance(palette, dict):
            colours = [_css(palette.get(c, PALETTE[i % len(PALETTE)])) for i, c in enumerate(cats)]
        else:
            seq = list(palette) if palette is not None else PALETTE
            colours = [_css(seq[i % len(seq)]) for i in range(len(cats))]
        if self.scatter is not None:
            self.scatter.colour_categorical(codes, cats, colours, title)
            return
        marker = dict(color=codes, colorscale=_discrete_scale(colours), cmin=-0.5, cmax=len(cats) - 0.5,
                      showscale=False)
        self._apply_colours(None, marker, list(zip(cats, colours)))

    def _apply_colours(self, single: str | None, marker: dict | None, keys: list | None = None) -> None:
        with self.figure.batch_update():
            m = self.figure.data[IMAGE_TRACE].marker
            if marker is None:
                m.update(color=single, showscale=False)
            else:
                m.update(**marker)
            keys = keys or []
            shown = keys[:MAX_KEYS] if len(keys) <= MAX_KEYS else keys[:MAX_KEYS - 1] + [
                (f"+ {len(keys) - MAX_KEYS + 1} more", "#bbbbbb")]
            for j in range(MAX_KEYS):
                key = self.figure.data[FIRST_KEY_TRACE + j]
                if j < len(shown):
                    key.update(name=shown[j][0], marker_color=shown[j][1], visible=True)
                elif key.visible:
                    key.visible = False

    # --- texts ------------------------------------------------------------------------------------
    def add_texts(self, texts: Sequence[str], text_embeddings=None, clip=None, _coords=None) -> pd.DataFrame:
        """Place texts on the map with projection.transform (embedded with `clip` or the map's clip
        when `text_embeddings` is None); returns their rows (text, x, y, fitted)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            return self.texts.iloc[:0]
        emb = self._embed_texts(clip or self.clip, texts) if text_embeddings is None else \
            np.asarray(text_embeddings, dtype=np.float32).reshape(len(texts), -1)
        xy = self.projection.transform(emb) if _coords is None else np.asarray(_coords, dtype=np.float32)
        rows = pd.DataFrame({"text": texts, "x": xy[:, 0], "y": xy[:, 1], "fitted": _coords is not None})
        self.texts = pd.concat([self.texts, rows], ignore_index=True) if len(self.texts) else rows
        self.text_emb = np.vstack([self.text_emb, emb])
        self._draw_texts()
        return rows

    def clear_texts(self) -> None:
        """Remove the text points placed with add_texts (those fitted with the images stay)."""
        keep = self.texts["fitted"].to_numpy(dtype=bool)
        self.texts = self.texts[keep].reset_index(drop=True)
        self.text_emb = self.text_emb[keep]
        self._draw_texts()

    def _draw_texts(self) -> None:
        if self.scatter is not None:
            self.scatter.draw_texts(self.texts)
            self.texts_label.value = self.scatter.texts_html(self.texts)
            return
        with self.figure.batch_update():
            t = self.figure.data[TEXT_TRACE]
            t.x, t.y = self.texts["x"].to_numpy(), self.texts["y"].to_numpy()
            t.text = self.texts["text"].tolist()

    # --- static export ----------------------------------------------------------------------------
    def to_figure(self, thumbnails: bool = False, max_points: int = STATIC_MAX_POINTS, seed: int = 0) -> go.Figure:
        """A plain go.Figure copy of the map (for save_figure); with thumbnails=True each image point
        carries [index, PNG data URI] in customdata, for the HTML hover hook. A map of more than
        `max_points` images draws a seeded random subsample of them (its title says so); customdata
        keeps each drawn point's row index in `points`."""
        keep = self._static_rows(max_points, seed)
        if self.figure is not None and keep is None:
            fig = go.Figure(self.figure)
        else:
            fig = self._static_copy(keep)
        if thumbnails and self.thumbnails is not None:
            rows = range(len(self.points)) if keep is None else keep
            uris = ["data:image/png;base64," + base64.b64encode(self.thumbnail_png(int(i))).decode("ascii")
                    for i in rows]
            fig.data[IMAGE_TRACE].customdata = np.array([[int(i), u] for i, u in zip(rows, uris)], dtype=object)
            fig.data[IMAGE_TRACE].hovertemplate = "%{text}<extra>image %{customdata[0]}</extra>"
        return fig

    def _static_rows(self, max_points: int, seed: int) -> np.ndarray | None:
        n = len(self.points)
        if n <= max_points:
            return None
        return np.sort(np.random.default_rng(seed).choice(n, size=int(max_points), replace=False))

    def _static_copy(self, keep: np.ndarray | None) -> go.Figure:
        """A plotly figure of the rows `keep` (all when None) in the current colours: what a big map
        (no plotly figure of its own) or a subsampled export draws."""
        rows = np.arange(len(self.points)) if keep is None else keep
        pts = self.points.iloc[rows]
        small = EmbeddingMap(self.projection, self.image_emb[:2], pts.reset_index(drop=True), None, None,
                             self.hover, backend="plotly")
        small.texts, small.text_emb = self.texts, self.text_emb
        small._draw_texts()
        if self.coloured_by is not None and self.coloured_by.startswith("query: "):
            small._continuous(pts["query_similarity"].to_numpy(dtype=float), "cos sim to<br>" +
                              html.escape(self.coloured_by[len("query: "):][:40]))
        elif self.coloured_by is not None:
            small.color_by(self.coloured_by)
        small.figure.data[IMAGE_TRACE].customdata = rows
        fig = go.Figure(small.figure)
        if keep is not None:
            fig.update_layout(title=f"{len(rows):,} of {len(self.points):,} points (seeded random subsample)")
        return fig

    def write_html(self, path, include_plotlyjs=True, max_points: int = STATIC_MAX_POINTS) -> None:
        """A standalone HTML map whose hovered image points show their thumbnails (HOVER_JS); a map
        of more than `max_points` images draws a seeded subsample (see to_figure)."""
        self.to_figure(thumbnails=True, max_points=max_points).write_html(
            path, include_plotlyjs=include_plotlyjs, post_script=HOVER_JS)


def _natural(s: str):
    # "2" < "10" for numeric-looking categories (counts, cluster ids), plain order otherwise
    try:
        return (0, float(s), "")
    except ValueError:
        return (1, 0.0, s)


def _css(colour) -> str:
    if isinstance(colour, (tuple, list)):
        return "rgb({},{},{})".format(*(int(c) for c in colour[:3]))
    return str(colour)


def more_distinct_than(values: pd.Series, k: int, sample: int = 4096) -> bool:
    """values.nunique() > k, without hashing a million floats when a strided sample already holds
    more than k distinct values (31 ms of a 1M-point recolour's 36 went to nunique). A sample with
    k or fewer says nothing about the rest: then every value is counted."""
    step = max(1, len(values) // sample)
    if step > 1 and values.iloc[::step].nunique() > k:
        return True
    return values.nunique() > k


def category_codes(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """(codes, categories) for colouring by a column: one int32 code per row into `categories`, the
    distinct values as strings in natural order (a pandas Categorical keeps its own order), and
    "n/a" last for missing values. Through pandas.factorize, so a million rows take milliseconds,
    not the second that converting every row to a string takes."""
    categorical = isinstance(values.dtype, pd.CategoricalDtype)
    inv, uniq = pd.factorize(values, sort=False)  # missing -> -1
    labels = [str(u) for u in uniq]
    if categorical:
        rank = {str(c): i for i, c in enumerate(values.cat.categories)}
        cats = sorted(set(labels), key=rank.__getitem__)
    else:
        cats = sorted(set(labels), key=_natural)
    missing = bool((inv < 0).any())
    if missing and "n/a" not in cats:
        cats.append("n/a")
    pos = {c: i for i, c in enumerate(cats)}
    remap = np.array([pos[lab] for lab in labels] + [pos.get("n/a", 0)], dtype=np.int32)  # [-1]: missing
    return remap[inv], cats


class LazyThumbnails:
    """Thumbnails of `images` made when first asked for (hover, grid) and kept in an LRU of
    `keep` of them: what a map of a million image paths holds instead of a million PIL images."""

    def __init__(self, images: Sequence, size: int, keep: int = 4096):
        self.images, self.size, self.keep = images, size, keep
        self._cache: dict[int, Image.Image] = {}

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Image.Image:
        i = int(i)
        if i in self._cache:
            self._cache[i] = self._cache.pop(i)  # most recent last
            return self._cache[i]
        im = _thumbnail(self.images[i], self.size)
        self._cache[i] = im
        while len(self._cache) > self.keep:
            self._cache.pop(next(iter(self._cache)))
        return im
