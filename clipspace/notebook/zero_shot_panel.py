"""Notebook 01's panel: typed class names and a template set make a zero-shot classifier of world scenes.

Each redraw is one call of `clipspace.probes.zero_shot.world_zero_shot` (a classifier from the typed names
and templates, applied to the probe scenes' embeddings); this module only chooses the arguments from
the controls and puts the confusion matrix and one scene's probability bars on screen.

    panel = ZeroShotPanel(clip, scenes)              # display(panel)
    panel.controls.template_set.value = "single"     # what the dropdown does; panel.confusion changed
    panel.controls.scene.value = 3                   # the bars show scene 3 (no reclassification)
"""
from __future__ import annotations

from types import SimpleNamespace

import ipywidgets as W
import plotly.graph_objects as go

from clipspace import world
from clipspace.figures import png_bytes
from clipspace.probes.typographic import class_probability_bars
from clipspace.notebook.widgets import FigureWidget, Panel, error_output, figure_panel, guarded, put_figure, save_button
from clipspace.probes.zero_shot import TEMPLATE_SETS, confusion_figure, embed_images, parse_classnames, world_zero_shot

TEMPLATE_LABELS = {"world": "world templates", "imagenet": "open_clip ImageNet templates (80)",
                   "single": 'a single "a photo of a {}."'}
NO_TRUTH = ("these class names are not all world shapes or all world colours: no truth to score against, "
            "so the confusion matrix keeps the last scored run; the bars still show the probabilities")


class ZeroShotPanel(Panel):
    """Zero-shot classification of world scenes with typed class names and a named template set.

    `controls`: classes (comma-separated names), template_set ('world', 'imagenet', 'single'),
    seed (0: the scenes given; any other number draws as many new single-object scenes with
    `world.single_objects(n, world.PROBE_SEED + seed)`), scene (the scene whose bars show).
    `confusion`, `bars`: the two FigureWidgets, updated in place; `probe`: the last
    `WorldZeroShot`; `scenes`, `embeddings`: the probe set in use; `output`: errors and notes.
    """

    def __init__(self, clip, scenes, embeddings=None):
        self.clip = clip
        self.given = list(scenes)
        if not self.given:
            raise ValueError("ZeroShotPanel: `scenes` is empty; pass world scenes, e.g. world.single_objects(48)")
        self.scenes = self.given
        self.embeddings = self.given_embeddings = embed_images(clip, self.given if embeddings is None else embeddings)
        self.seed, self.probe = 0, None
        self.confusion = self.bars = None
        c = self.controls = SimpleNamespace(
            classes=W.Text(value=", ".join(world.SHAPES), description="classes", layout=W.Layout(width="420px")),
            template_set=W.Dropdown(options=[(TEMPLATE_LABELS[t], t) for t in TEMPLATE_SETS], value="world",
                                    description="templates"),
            seed=W.BoundedIntText(value=0, min=0, max=10**6, description="probe seed",
                                  layout=W.Layout(width="180px")),
            scene=W.IntSlider(value=0, min=0, max=len(self.given) - 1, description="scene"),
        )
        self.picture = W.Image(format="png", width=128, height=128)
        self.output = error_output()
        self._draw = {"classifier": guarded(self.output)(self._draw_classifier),
                      "scene": guarded(self.output)(self._draw_scene)}
        for control in (c.classes, c.template_set, c.seed):  # the text fires on every edit: a few captions each
            control.observe(lambda _: self.refresh(), names="value")
        c.scene.observe(lambda _: self.refresh("scene"), names="value")
        self.refresh()
        self.confusion = self.confusion if self.confusion is not None else FigureWidget(go.Figure())
        self.bars = self.bars if self.bars is not None else FigureWidget(go.Figure())
        self.widget = figure_panel(W.HBox([self.confusion, W.VBox([c.scene, self.picture]), self.bars]),
                                   [c.classes, c.template_set, c.seed], self.output,
                                   save=save_button(lambda: self.confusion, "zero_shot_confusion", self.output))

    def figures(self) -> dict:
        """The confusion matrix and the bars, named for `save_figure` / `clipspace tour`."""
        return {"zero_shot_confusion": self.confusion, "zero_shot_bars": self.bars}

    def refresh(self, view: str = "classifier") -> None:
        """'classifier': rebuild the classifier (classes, templates, seed), re-score, redraw both
        figures; 'scene': the bars of the scene slider's scene from the last result."""
        self._draw[view]()

    def probe_set(self, seed: int):
        """(scenes, embeddings) for a probe seed: the given ones at 0, else new single objects."""
        if seed == 0:
            return self.given, self.given_embeddings
        scenes = world.single_objects(len(self.given), world.PROBE_SEED + seed)
        return scenes, embed_images(self.clip, scenes)

    def _draw_classifier(self):
        c = self.controls
        if c.seed.value != self.seed:
            self.scenes, self.embeddings = self.probe_set(c.seed.value)
            self.seed = c.seed.value
        names = parse_classnames(c.classes.value)
        probe = self.probe = world_zero_shot(self.clip, self.scenes, names, c.template_set.value,
                                             embeddings=self.embeddings)
        if probe.scored is not None:
            self.confusion = put_figure(self.confusion, confusion_figure(
                probe.scored, title=f"{probe.factor}, {TEMPLATE_LABELS[c.template_set.value]}"))
        else:
            print(NO_TRUTH)
        self._draw_scene()  # unguarded: this call's guard already caught errors and keeps the note above

    def _draw_scene(self):
        i, r = self.controls.scene.value, self.probe.result
        scene = self.scenes[i]
        self.picture.value = png_bytes(scene.render(128))
        self.bars = put_figure(self.bars, class_probability_bars(
            r.probs[i], r.classnames, title=f"{scene.caption(0)} → {r.predicted_names[i]}", top=None))
