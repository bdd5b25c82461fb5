"""Notebook 01's panel: typed class names and a template set make a zero-shot classifier of world scenes.

Each redraw is one call of `clipspace.probes.zero_shot.world_zero_shot` (a classifier from the typed names
and templates, applied to the probe scenes' embeddings); this module only chooses the arguments from
the controls and puts the confusion matrix and one scene's probability bars on screen.

    panel = ZeroShotPanel(clip, scenes)              # display(panel)
    panel.controls.template_set.value = "single"     # what the dropdown does; panel.confusion changed
    panel.controls.scene.value = 3                   # the bars show scene 3 (no reclassification)

With `source=ImageSourcePanel(...)` the panel also classifies the user's images (a folder, an
upload, bundled photos) with the same classifier; a folder's first-level subfolders are their
classes (root/cat/1.jpg is a cat), so those whose class is typed are scored. Back on the world
presets it is the probe set again.
"""
from __future__ import annotations

from types import SimpleNamespace

import ipywidgets as W
import numpy as np
import plotly.graph_objects as go

from clipspace import world
from clipspace.figures import png_bytes
from clipspace.image_sources import thumbnail
from clipspace.probes.typographic import class_probability_bars
from clipspace.notebook.widgets import FigureWidget, Panel, error_output, figure_panel, guarded, put_figure, save_button
from clipspace.probes.zero_shot import (TEMPLATE_SETS, WorldZeroShot, ZeroShotClassifier, confusion_figure,
                                       embed_images, parse_classnames, templates_for, world_zero_shot)

TEMPLATE_LABELS = {"world": "world templates", "imagenet": "open_clip ImageNet templates (80)",
                   "single": 'a single "a photo of a {}."'}
NO_TRUTH = ("these class names are not all world shapes or all world colours: no truth to score against, "
            "so the confusion matrix keeps the last scored run; the bars still show the probabilities")
NO_LABELS = ("none of these images has a class among the class names (a folder's subfolders name classes: "
             "root/cat/1.jpg is a cat), so the confusion matrix keeps the last scored run; the bars show each image")


class ZeroShotPanel(Panel):
    """Zero-shot classification of world scenes with typed class names and a named template set.

    `controls`: classes (comma-separated names), template_set ('world', 'imagenet', 'single'),
    seed (0: the scenes given; any other number draws as many new single-object scenes with
    `world.single_objects(n, world.PROBE_SEED + seed)`), scene (the scene whose bars show).
    `confusion`, `bars`: the two FigureWidgets, updated in place; `probe`: the last
    `WorldZeroShot`; `scenes`, `embeddings`: the probe set in use; `output`: errors and notes.
    `source`: an `ImageSourcePanel` (shown on top) whose images, when it is not on the world
    presets, are classified instead of the probe scenes (the probe seed is then unused); `shown`:
    (images, names) the bars then show, None while they show probe scenes.
    """

    def __init__(self, clip, scenes, embeddings=None, source=None):
        self.clip = clip
        self.given = list(scenes)
        if not self.given:
            raise ValueError("ZeroShotPanel: `scenes` is empty; pass world scenes, e.g. world.single_objects(48)")
        self.scenes = self.given
        self.embeddings = self.given_embeddings = embed_images(clip, self.given if embeddings is None else embeddings)
        self.seed, self.probe, self.source, self.shown = 0, None, source, None
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
        self._quiet = False
        c.scene.observe(lambda _: None if self._quiet else self.refresh("scene"), names="value")
        if source is not None:
            source.on_change(lambda _: self.refresh())
        self.refresh()
        self.confusion = self.confusion if self.confusion is not None else FigureWidget(go.Figure())
        self.bars = self.bars if self.bars is not None else FigureWidget(go.Figure())
        self.widget = figure_panel(W.HBox([self.confusion, W.VBox([c.scene, self.picture]), self.bars]),
                                   [c.classes, c.template_set, c.seed], self.output,
                                   save=save_button(lambda: self.confusion, "zero_shot_confusion", self.output))
        if source is not None:
            self.widget = W.VBox([source.widget, self.widget])

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

    def user_images(self) -> bool:
        """Whether the panel classifies the source's images (a source not on the world presets)."""
        return self.source is not None and self.source.kind != "world" and bool(self.source.images)

    def _draw_classifier(self):
        c = self.controls
        if self.user_images():
            return self._draw_user_images()
        if c.seed.value != self.seed:
            self.scenes, self.embeddings = self.probe_set(c.seed.value)
            self.seed = c.seed.value
        names = parse_classnames(c.classes.value)
        probe = self.probe = world_zero_shot(self.clip, self.scenes, names, c.template_set.value,
                                             embeddings=self.embeddings)
        self.shown = None  # the bars show probe scenes again
        if probe.scored is not None:
            self.confusion = put_figure(self.confusion, confusion_figure(
                probe.scored, title=f"{probe.factor}, {TEMPLATE_LABELS[c.template_set.value]}"))
        else:
            print(NO_TRUTH)
        self._fit_slider(len(self.scenes))
        self._draw_scene()  # unguarded: this call's guard already caught errors and keeps the note above

    def _draw_user_images(self):
        """The typed classifier over the source's images; those whose folder class is typed are scored."""
        c, images = self.controls, self.source.value
        names = parse_classnames(c.classes.value)
        zsc = ZeroShotClassifier.from_clip(self.clip, names, templates_for(c.template_set.value, names))
        z = self.source.embeddings()
        index = np.array([i for i, lab in enumerate(images.labels) if lab in names], dtype=np.int64)
        scored = zsc.classify(z[index], [images.labels[i] for i in index], names=index.tolist()) if len(index) else None
        self.probe = WorldZeroShot(zsc.classify(z), scored, "subfolder" if scored is not None else None, index)
        self.shown = (list(images.images), list(images.names))  # what the bars show, until the next classification
        if scored is not None:
            self.confusion = put_figure(self.confusion, confusion_figure(
                scored, title=f"your images by subfolder, {TEMPLATE_LABELS[c.template_set.value]}"))
        else:
            print(NO_LABELS)
        self._fit_slider(len(images))
        self._draw_scene()

    def _fit_slider(self, n: int):
        s = self.controls.scene
        if s.max != n - 1:
            self._quiet = True  # the bars are drawn once, after
            try:
                s.value, s.max = min(s.value, n - 1), n - 1
            finally:
                self._quiet = False

    def _draw_scene(self):
        i, r = self.controls.scene.value, self.probe.result
        if self.shown is not None:
            image, name = self.shown[0][i], self.shown[1][i]
            self.picture.value = png_bytes(thumbnail(image, 128))
            self.bars = put_figure(self.bars, class_probability_bars(
                r.probs[i], r.classnames, title=f"{name} → {r.predicted_names[i]}", top=None))
            return
        scene = self.scenes[i]
        self.picture.value = png_bytes(scene.render(128))
        self.bars = put_figure(self.bars, class_probability_bars(
            r.probs[i], r.classnames, title=f"{scene.caption(0)} → {r.predicted_names[i]}", top=None))
