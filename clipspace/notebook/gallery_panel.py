"""Notebook 00's panel: a slider over scenes, the picture, and a zero-shot classifier's probabilities.

The probabilities are computed once (`ZeroShotClassifier.__call__`); moving the slider only shows
another row of them.

    panel = GalleryPanel(clip, classifier, scenes)      # display(panel)
    panel.controls.scene.value = 3                      # the bars now show scene 3's probabilities
"""
from __future__ import annotations

from types import SimpleNamespace

import ipywidgets as W
import plotly.graph_objects as go

from clipspace.figures import png_bytes
from clipspace.notebook.widgets import FigureWidget, Panel, error_output, figure_panel, guarded, save_button


class GalleryPanel(Panel):
    """`controls.scene`: which scene; `bars`: the FigureWidget of its class probabilities; `result`:
    the classifier's result on every scene (probs, predicted_names)."""

    def __init__(self, clip, classifier, scenes, picture_size: int = 160):
        if not scenes:
            raise ValueError("scenes is empty: give at least one scene")
        self.scenes, self.picture_size = list(scenes), picture_size
        self.result = classifier(clip, self.scenes)
        self.controls = SimpleNamespace(scene=W.IntSlider(value=0, min=0, max=len(self.scenes) - 1,
                                                          description="scene"))
        self.bars = FigureWidget(go.Bar(x=list(classifier.classnames), y=[0.0] * len(classifier.classnames),
                                        marker_color="#4c72b0"))
        self.bars.update_layout(yaxis=dict(range=[0, 1], title="probability"), height=320, width=560,
                                title_font_size=13, margin=dict(l=60, r=20, t=60, b=40))
        self.picture = W.Image(format="png", layout=W.Layout(width=f"{picture_size}px", height=f"{picture_size}px",
                                                             margin="60px 0 0 0"))
        self.output = error_output()
        self.show = guarded(self.output)(self._show)
        self.controls.scene.observe(lambda _: self.show(), names="value")
        self.show()
        self.widget = figure_panel(W.HBox([self.picture, self.bars]), [self.controls.scene], self.output,
                                   save=save_button(lambda: self.bars, "tour_shape_probabilities", self.output))

    def _show(self) -> None:
        i = self.controls.scene.value
        scene, probs = self.scenes[i], self.result.probs[i]
        self.picture.value = png_bytes(scene.render(self.picture_size))
        with self.bars.batch_update():
            self.bars.data[0].y = [float(p) for p in probs]
            self.bars.layout.title = (f"scene {i}: {scene.caption(0)}<br>CLIP says {self.result.predicted_names[i]} "
                                      f"({probs.max():.2f})")

    def figures(self) -> dict:
        return {"tour_shape_probabilities": self.bars}
