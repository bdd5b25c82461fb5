"""Notebook 05's panel: write a word on a world scene, and see whether the label (and the decoder) follow it.

The attack view is one call of `clipspace.probes.typographic.scene_attack` (the scene clean and with the
word, both classified by shape); the decode view inverts the attacked scene with `clipspace.unclip.latents`
(`invert`, `decode`, `variations`) and classifies each decode. This module only chooses the
arguments from the controls and puts the results on screen. Without a decoder (`decoder_for`), the
decode view is one line saying why; the attack view works the same.

    panel = TypographicPanel(clip, decoder, world.typographic_scenes(12), reason=why)
    panel.section("attack"); panel.section("decode")     # or display(panel) for both
    panel.controls.opacity.value = 0.3                   # what a slider does; panel.bars changed
    panel.controls.decode.click()                        # panel.grids["decode"] changed

With `source=ImageSourcePanel(...)`, the "your_images" view writes the same word (same size,
opacity and position, on a white label) on each of the source's images and classifies them clean
and attacked: `user_attack`. The user's images have no known truth, so the clean prediction
stands in for it: a flip is the label moving from what the model saw to the word.
"""
from __future__ import annotations

from types import SimpleNamespace

import ipywidgets as W
import numpy as np
import plotly.graph_objects as go

from clipspace import world
from clipspace.figures import image_grid, png_bytes
from clipspace.image_sources import is_world_clip, thumbnail
from clipspace.probes.typographic import (SKIMAGE_CLASSES, TypographicResult, attack_classnames, scene_attack,
                                         write_text)
from clipspace.unclip.latents import decode, invert, variations
from clipspace.notebook.image_source_panel import NO_IMAGES
from clipspace.notebook.widgets import FigureWidget, Panel, error_output, figure_panel, guarded, put_figure, save_button
from clipspace.probes.zero_shot import (PHOTO_TEMPLATES, WORLD_TEMPLATES, ZeroShotClassifier, embed_images,
                                       parse_classnames, world_classnames, world_factor)

VIEWS = ("attack", "decode", "your_images")


class TypographicPanel(Panel):
    """One scene, clean and with a written word, classified by shape; the attacked image decoded.

    `controls`: scene (index into `scenes`; resets word, x and y to the scene's own label), word,
    size, opacity, x, y (the word's centre), eta (the variations' DDIM eta), decode (a Button:
    invert the attacked scene and decode it again). `attack`: the last `SceneAttack`; `bars`: its
    FigureWidget, updated in place; `grids`: the last decoded grid; `outputs`: each view's Output.
    `decoder` None: the decode view is `reason`, one line. `source`: an `ImageSourcePanel` for the
    "your_images" view (its `classes` box: the classes to read them with; `user_result`: the last
    `TypographicResult` there).
    """

    def __init__(self, clip, decoder, scenes=None, steps: int = 20, reason: str = "", image_size: int = 160,
                 source=None):
        self.clip, self.decoder, self.steps, self.image_size = clip, decoder, steps, image_size
        self.scenes = list(world.typographic_scenes(12) if scenes is None else scenes)
        self.reason = reason or "No decoder pairs with this CLIP."
        self.attack, self.bars, self.grids, self.source, self.user_result = None, None, {}, source, None
        first = self.scenes[0].text
        c = self.controls = SimpleNamespace(
            scene=W.IntSlider(value=0, min=0, max=len(self.scenes) - 1, description="scene"),
            word=W.Text(value=first.word if first else "ipod", description="word", continuous_update=False),
            size=W.FloatSlider(value=0.22, min=0.08, max=0.5, step=0.02, description="size", continuous_update=False),
            opacity=W.FloatSlider(value=1.0, min=0.0, max=1.0, step=0.05, description="opacity",
                                  continuous_update=False),
            x=W.FloatSlider(value=0.5, min=0.1, max=0.9, step=0.05, description="x", continuous_update=False),
            y=W.FloatSlider(value=0.8, min=0.1, max=0.9, step=0.05, description="y", continuous_update=False),
            eta=W.FloatSlider(value=0.7, min=0.1, max=1.0, step=0.1, description="eta"),
            decode=W.Button(description="decode", icon="paint-brush"),
            classes=W.Text(value=", ".join(world_classnames("shape") if is_world_clip(clip) else SKIMAGE_CLASSES),
                           description="classes", continuous_update=False, layout=W.Layout(width="460px")),
        )
        self.clean_view, self.attacked_view = (W.Image(format="png", width=160, height=160) for _ in range(2))
        self.decoded_view, self.user_view = W.Image(format="png"), W.Image(format="png")
        self.outputs = {v: error_output() for v in VIEWS}
        self._draw = {"scene": guarded(self.outputs["attack"])(self._draw_scene),
                      "attack": guarded(self.outputs["attack"])(self._draw_attack),
                      "decode": guarded(self.outputs["decode"])(self._draw_decode),
                      "your_images": guarded(self.outputs["your_images"])(self._draw_your_images)}
        self._quiet = False  # set while a new scene sets word, x and y: one redraw after, not three
        for control in (c.word, c.size, c.opacity, c.x, c.y):
            control.observe(lambda _: None if self._quiet else self.refresh("attack"), names="value")
        c.scene.observe(lambda _: self.refresh("scene"), names="value")
        self.refresh("scene")
        self.bars = self.bars if self.bars is not None else FigureWidget(go.Figure())
        self.sections = {"attack": figure_panel(
            W.HBox([W.VBox([W.HTML("clean"), self.clean_view]), W.VBox([W.HTML("attacked"), self.attacked_view]),
                    self.bars]),
            [W.VBox([c.scene, c.word]), W.VBox([c.size, c.opacity]), W.VBox([c.x, c.y])], self.outputs["attack"],
            save=save_button(lambda: self.bars, "typographic_bars", self.outputs["attack"]))}
        if decoder is None:
            self.sections["decode"] = W.HTML(f"<i>{self.reason}</i>")
        else:
            self.shape_classifier = ZeroShotClassifier.from_clip(clip, world_classnames("shape"),
                                                                 WORLD_TEMPLATES["shape"])
            c.decode.on_click(lambda _: self.refresh("decode"))
            self.refresh("decode")
            self.sections["decode"] = figure_panel(
                W.HBox([self.decoded_view, self.bars]), [c.eta, c.decode], self.outputs["decode"],
                save=save_button(lambda: self.grids.get("decode"), "typographic_decoded", self.outputs["decode"]))
        if source is not None:
            for control in (c.word, c.size, c.opacity, c.x, c.y, c.classes):
                control.observe(lambda _: None if self._quiet else self.refresh("your_images"), names="value")
            source.on_change(lambda _: self.refresh("your_images"))
            self.refresh("your_images")
            self.sections["your_images"] = W.VBox([source.widget, figure_panel(
                self.user_view, [c.classes], self.outputs["your_images"],
                save=save_button(lambda: self.grids.get("your_images"), "typographic_your_images",
                                 self.outputs["your_images"]))])
        self.widget = W.VBox(list(self.sections.values()))

    def figures(self) -> dict:
        """The bars and (with a decoder) the decoded grid, named for `save_figure` / `clipspace tour`."""
        return {"typographic_bars": self.bars,
                **({"typographic_decoded": self.grids["decode"]} if "decode" in self.grids else {}),
                **({"typographic_your_images": self.grids["your_images"]} if "your_images" in self.grids else {})}

    def refresh(self, view: str = "attack") -> None:
        """'scene': the slider's scene with its own label, then 'attack': write the word and classify
        clean and attacked; 'decode': invert the attacked scene and decode it; 'your_images': the
        word on each of the source's images, read clean and attacked."""
        self._draw[view]()

    def _draw_scene(self):
        c, text = self.controls, self.scenes[self.controls.scene.value].text
        if text is not None:
            self._quiet = True
            try:
                c.word.value, c.x.value, c.y.value = text.word, round(text.x, 2), round(text.y, 2)
            finally:
                self._quiet = False
            if self.source is not None and self.user_result is not None:
                self.refresh("your_images")  # the word moved while quiet
        self._draw_attack()  # unguarded: this call's guard already shows the error

    def _draw_attack(self):
        c = self.controls
        sa = self.attack = scene_attack(self.clip, self.scenes[c.scene.value], c.word.value, x=c.x.value, y=c.y.value,
                                        size=c.size.value, opacity=c.opacity.value, image_size=self.image_size)
        self.clean_view.value, self.attacked_view.value = png_bytes(sa.clean), png_bytes(sa.attacked)
        self.bars = put_figure(self.bars, sa.figure(top=None))

    def _draw_decode(self):
        sa, steps = self.attack, self.steps
        latents = invert(self.decoder, self.clip, [sa.attacked_scene], steps=steps)
        images = decode(self.decoder, latents.z, latents.x_T, eta=0.0, steps=steps)  # the reconstruction
        images += variations(self.decoder, latents.z, latents.x_T, n=3, eta=self.controls.eta.value, steps=steps,
                             seed=0)
        called = self.shape_classifier(self.clip, images).predicted_names
        self.grids["decode"] = image_grid([sa.attacked_scene.render(self.decoder.image_size)] + images, scale=4,
                                          font_size=11, titles=[f'"{sa.word}" → {sa.attacked_prediction}',
                                                                f"recon: {called[0]}"]
                                          + [f"variation: {c}" for c in called[1:]])
        self.decoded_view.value = png_bytes(self.grids["decode"])

    def _draw_your_images(self):
        if not self.source.images:  # nothing read yet (an empty upload): keep what is on screen
            return print(NO_IMAGES)
        c = self.controls
        r, attacked = user_attack(self.clip, self.source.images, c.word.value, parse_classnames(c.classes.value),
                                  embeddings=self.source.embeddings(), position=(c.x.value, c.y.value),
                                  size=c.size.value, opacity=c.opacity.value)
        self.user_result = r
        self.grids["your_images"] = image_grid(
            [thumbnail(im, 128) for im in attacked], ncols=min(len(attacked), 6), font_size=10,
            titles=[f"{name}: {a} -> {b}" for name, a, b in zip(self.source.names, r.clean.predicted_names,
                                                                 r.attacked.predicted_names)])
        self.user_view.value = png_bytes(self.grids["your_images"])
        s = r.summary().iloc[0]
        print(f'"{r.words[0]}" on {len(r.words)} images: the label went to the word on {s["flip_rate"]:.0%} of the '
              f'{int(s["n_eligible"])} whose clean label was another class, and changed on '
              f'{1 - s["attacked_accuracy"]:.0%} of all')


def user_attack(clip, images, word: str, classnames, embeddings=None, templates=None, **text):
    """(result, attacked images): `word` written on each image (`write_text` on a white label;
    `text`: position, size, opacity, ...) and both versions classified over `classnames` plus the
    word (`attack_classnames`), as a `TypographicResult`.

    Shortcut: the images have no known truth, so each one's clean prediction stands in for it.
    Accuracy is then agreement with the clean label, and `flip_rate` the share, among images whose
    clean label is not the word, that the word took. Templates: the world's shape ensemble for
    world shape names, else "a photo of a {}.". `embeddings`: the clean images', if already computed.
    """
    word = str(word).strip()
    names = attack_classnames(word, classnames)
    if templates is None:
        templates = WORLD_TEMPLATES["shape"] if world_factor(list(classnames)) == "shape" else PHOTO_TEMPLATES
    zsc = ZeroShotClassifier.from_clip(clip, names, templates)
    images = list(images)
    z = embed_images(clip, images) if embeddings is None else np.asarray(embeddings, dtype=np.float32)
    labels = zsc.classify(z).predictions
    attacked = [write_text(im, word, box="white", **text) for im in images]
    result = TypographicResult(zsc.classify(z, labels), zsc.classify(embed_images(clip, attacked), labels),
                               [word] * len(images))
    return result, attacked
