"""Notebook 04's panel: every swap pair of one kind as a point, and one image scored against two captions.

The scatter is `clipspace.probes.binding.pair_scores_figure` of the probe's result; the score button is one
call of `clipspace.probes.binding.binding_probe` (one image, the two typed captions). This module only
chooses the arguments from the controls and puts the results on screen.

    panel = BindingPanel(clip, rows, result)          # rows: binding.binding_pairs(n); display(panel)
    panel.controls.kind.value = "count"               # the scatter shows the count pairs
    panel.controls.caption_b.value = "a circle that is red"; panel.controls.score.click()   # panel.pair_bars
    yours = CaptionPairPanel(clip, ImageSourcePanel(clip, presets=scenes), "a red square ...", "a blue square ...")
    yours.source.controls.kind.value = "photos"       # the two captions scored on each bundled photo
"""
from __future__ import annotations

from types import SimpleNamespace

import ipywidgets as W
import plotly.graph_objects as go

from clipspace.probes.binding import KINDS, binding_probe, pair_scores_figure
from clipspace.figures import image_grid, png_bytes
from clipspace.image_sources import thumbnail
from clipspace.notebook.image_source_panel import NO_IMAGES
from clipspace.notebook.widgets import FigureWidget, Panel, error_output, figure_panel, guarded, put_figure, save_button


class BindingPanel(Panel):
    """The binding probe's pairs of one kind, and one image against two captions you can edit.

    `rows`: (scene, true caption, swapped caption, kind) as `binding.binding_pairs` gives them;
    `result`: `binding_probe` of those rows (computed here when not given).
    `controls`: kind (a swap kind or 'all'), pair (index within the kind), caption_a, caption_b
    (set to the pair's true and swapped captions when the pair changes; edit, then press score),
    score (a Button). `scatter`, `pair_bars`: the FigureWidgets, updated in place; `scores`: the
    last (cosine A, cosine B); `output`: errors.
    """

    def __init__(self, clip, rows, result=None):
        self.clip, self.rows = clip, list(rows)
        self.result = result if result is not None else binding_probe(
            clip, [r[0] for r in self.rows], [r[1] for r in self.rows], [r[2] for r in self.rows],
            [r[3] for r in self.rows])
        kinds = [k for k in KINDS if k in set(self.result.kinds)] + \
            [k for k in dict.fromkeys(self.result.kinds) if k not in KINDS]
        self.scatter, self.scores = None, None
        c = self.controls = SimpleNamespace(
            kind=W.Dropdown(options=[*kinds, "all"], value=kinds[0], description="swap kind"),
            pair=W.IntSlider(value=0, min=0, max=max(len(self.pairs_of_kind(kinds[0])) - 1, 0), description="pair"),
            caption_a=W.Text(description="caption A", layout=W.Layout(width="460px")),
            caption_b=W.Text(description="caption B", layout=W.Layout(width="460px")),
            score=W.Button(description="score", icon="calculator"),
        )
        self.scores_text = W.HTML()
        self.picture = W.Image(format="png", width=160, height=160)
        self.output = error_output()
        self.pair_bars = FigureWidget(go.Bar(x=["caption A", "caption B"], y=[0.0, 0.0],
                                             marker_color=["#4c72b0", "#dd8452"]))
        self.pair_bars.update_layout(height=260, width=300, yaxis=dict(title="cosine"),
                                     margin=dict(l=10, r=10, t=40, b=30))
        self._draw = {name: guarded(self.output)(getattr(self, f"_draw_{name}")) for name in ("kind", "pair", "score")}
        self._quiet = False  # set while the kind redraws: moving the pair's max redraws the pair once, after
        c.kind.observe(lambda _: self.refresh("kind"), names="value")
        c.pair.observe(lambda _: None if self._quiet else self.refresh("pair"), names="value")
        c.score.on_click(lambda _: self.refresh("score"))
        self.refresh()
        self.scatter = self.scatter if self.scatter is not None else FigureWidget(go.Figure())
        side = W.VBox([c.pair, self.picture, c.caption_a, c.caption_b, W.HBox([c.score, self.scores_text]),
                       self.pair_bars])
        self.widget = figure_panel(W.HBox([self.scatter, side]), [c.kind], self.output,
                                   save=save_button(lambda: self.scatter, "binding_pair_scores", self.output))

    def figures(self) -> dict:
        """The scatter and the two captions' bars, named for `save_figure` / `clipspace tour`."""
        return {"binding_pair_scores": self.scatter, "binding_caption_pair": self.pair_bars}

    def refresh(self, view: str = "kind") -> None:
        """'kind': the scatter, then the pair; 'pair': the pair's image and captions, then its scores;
        'score': the typed captions against the pair's image."""
        self._draw[view]()

    def pairs_of_kind(self, kind: str | None = None) -> list[tuple]:
        """The rows of `kind` (default: the dropdown's), in order; every row for 'all'."""
        kind = self.controls.kind.value if kind is None else kind
        return [r for r in self.rows if kind == "all" or r[3] == kind]

    def current_pair(self) -> tuple:
        return self.pairs_of_kind()[self.controls.pair.value]

    # each draw calls the next one unguarded: its own guard already shows the error
    def _draw_kind(self):
        self.scatter = put_figure(self.scatter, pair_scores_figure(self.result, self.controls.kind.value))
        self._quiet = True
        try:
            self.controls.pair.max = len(self.pairs_of_kind()) - 1
        finally:
            self._quiet = False
        self._draw_pair()

    def _draw_pair(self):
        scene, true_caption, swapped_caption, _ = self.current_pair()
        self.picture.value = png_bytes(scene.render(160))
        self.controls.caption_a.value, self.controls.caption_b.value = true_caption, swapped_caption
        self._draw_score()

    def _draw_score(self):
        c = self.controls
        r = binding_probe(self.clip, [self.current_pair()[0]], [c.caption_a.value], [c.caption_b.value])
        a, b = float(r.true_scores[0]), float(r.swapped_scores[0])
        self.scores = (a, b)
        with self.pair_bars.batch_update():
            self.pair_bars.data[0].y = [a, b]
            self.pair_bars.layout.title = f"A {a:.3f} vs B {b:.3f}: {'A' if a > b else 'B' if b > a else 'tie'} wins"
        self.scores_text.value = (f"cosine(image, A) = <b>{a:.3f}</b>, cosine(image, B) = <b>{b:.3f}</b>, "
                                  f"margin {a - b:+.3f}")


class CaptionPairPanel(Panel):
    """Two captions you type, scored on every image of an `ImageSourcePanel` (the user's images).

    The world pairs above need scenes with known factors; here any image gets the same reading:
    its cosine with caption A and with caption B (`binding_probe` on the source's embeddings, one
    pair repeated). `controls`: caption_a, caption_b (scored on Enter). `result`: the last
    `BindingResult`; `bars`: its FigureWidget; `grid`: the images titled with their margins.
    Re-run on every source change.
    """

    def __init__(self, clip, source, caption_a: str = "a red square to the left of a blue circle",
                 caption_b: str = "a blue square to the left of a red circle"):
        self.clip, self.source, self.result, self.grid = clip, source, None, None
        self.controls = SimpleNamespace(
            caption_a=W.Text(value=caption_a, description="caption A", continuous_update=False,
                             layout=W.Layout(width="460px")),
            caption_b=W.Text(value=caption_b, description="caption B", continuous_update=False,
                             layout=W.Layout(width="460px")))
        self.bars = FigureWidget(go.Figure([go.Bar(name="caption A", marker_color="#4c72b0"),
                                            go.Bar(name="caption B", marker_color="#dd8452")]))
        self.bars.update_layout(barmode="group", height=320, yaxis=dict(title="cosine"),
                                margin=dict(l=10, r=10, t=50, b=30))
        self.picture = W.Image(format="png")
        self.output = error_output()
        self._draw = guarded(self.output)(self._draw_scores)
        for control in vars(self.controls).values():
            control.observe(lambda _: self.refresh(), names="value")
        source.on_change(lambda _: self.refresh())
        self.refresh()
        self.widget = W.VBox([source.widget, figure_panel(W.VBox([self.bars, self.picture]),
                                                          [self.controls.caption_a, self.controls.caption_b],
                                                          self.output, save_button(lambda: self.bars,
                                                                                   "binding_your_images",
                                                                                   self.output))])

    def figures(self) -> dict:
        return {"binding_your_images": self.bars}

    def refresh(self) -> None:
        """Score both captions on the source's images and redraw."""
        self._draw()

    def summary(self) -> str:
        r = self.result
        wins = int((r.true_scores > r.swapped_scores).sum())
        margin = float((r.true_scores - r.swapped_scores).mean())
        return f"caption A beats caption B on {wins} of {len(r.true_scores)} images (mean margin {margin:+.3f})"

    def _draw_scores(self):
        if not self.source.images:  # nothing read yet (an empty upload): keep what is on screen
            return print(NO_IMAGES)
        c, names = self.controls, list(self.source.names)
        n = len(names)
        r = self.result = binding_probe(self.clip, self.source.embeddings(), [c.caption_a.value] * n,
                                        [c.caption_b.value] * n)
        with self.bars.batch_update():
            self.bars.data[0].x = self.bars.data[1].x = names
            self.bars.data[0].y, self.bars.data[1].y = r.true_scores.tolist(), r.swapped_scores.tolist()
            self.bars.layout.title = self.summary()
        self.grid = image_grid([thumbnail(im, 96) for im in self.source.images], ncols=min(n, 8), font_size=10,
                               titles=[f"{name}: A {a - b:+.3f}" for name, a, b in
                                       zip(names, r.true_scores, r.swapped_scores)])
        self.picture.value = png_bytes(self.grid)
