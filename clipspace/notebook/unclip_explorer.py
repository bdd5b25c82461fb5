"""Notebook 06's panel: one scene as (z_i, x_T), with reconstruction, variations, interpolation and text diffs.

Each view is one call of `clipspace.unclip.views` (which calls `clipspace.unclip.latents`); this module only
chooses the arguments from the controls and puts the grids on screen. Moving a scene control
re-inverts and refreshes every view; moving a view's own controls redraws that view alone.
Without a decoder that pairs with the CLIP (`decoder_for`), the panel is one line saying why.

    panel = UnclipExplorer(clip, decoder)         # display(panel), or one view a section:
    display(panel.section("variations"))          # reconstruction, variations, interpolation, text_diff
    panel.controls.theta.value = 0.8              # what a slider does; panel.grids["text_diff"] changed

`UnclipImagesPanel(clip, decoder, source)` inverts the user's images (an `ImageSourcePanel`) with
plain DDIM and with exact (fixed-point) inversion, and shows both round trips with their PSNRs.
"""
from __future__ import annotations

from types import SimpleNamespace

import ipywidgets as W
import numpy as np

from clipspace import world
from clipspace.figures import image_grid, png_bytes
from clipspace.photos import square
from clipspace.unclip.latents import decode, invert, load_images, psnr
from clipspace.unclip.views import interpolation_view, reconstruction, text_diff_view, variation_view
from clipspace.notebook.image_source_panel import NO_IMAGES
from clipspace.notebook.widgets import Panel, error_output, figure_panel, guarded, save_button

VIEWS = ("reconstruction", "variations", "interpolation", "text_diff")


class UnclipExplorer(Panel):
    """Reconstruction, variations, interpolation and text diffs of one world scene (or one you build).

    `controls`: the widgets (scene: source, shape, colour, background, word; variations: eta, seed;
    interpolation: other, t, slerp_noise; text diffs: target_text, source_text, theta).
    `grids`: the last PIL grid of each view, `numbers`: the reconstruction's PSNRs, `outputs`: each
    view's Output widget (errors and notes show there), `widget`: the whole panel.
    """

    def __init__(self, clip, decoder, presets: list | None = None, steps: int = 25, reason: str = ""):
        self.clip, self.decoder, self.steps = clip, decoder, steps
        self.presets = presets if presets is not None else world.single_objects(12)
        self.grids, self.numbers, self.latents, self.scene = {}, {}, None, None
        self.reason = reason or "No decoder pairs with this CLIP."
        if decoder is None:
            self.controls, self.outputs, self.sections = SimpleNamespace(), {}, {}
            self.widget = W.HTML(f"<i>{self.reason}</i>")
            return
        self._inverted = {}  # preset index -> Latents: moving t or the toggle only decodes
        c = self.controls = SimpleNamespace(
            source=W.Dropdown(options=[(s.caption(0), i) for i, s in enumerate(self.presets)] +
                              [("build your own ↓", -1)], value=0, description="scene"),
            shape=W.Dropdown(options=world.SHAPES, value="star", description="shape"),
            colour=W.Dropdown(options=list(world.COLOURS), value="red", description="colour"),
            background=W.Dropdown(options=list(world.BACKGROUNDS), value="white", description="background"),
            word=W.Text(value="", description="word", placeholder="optional written word"),
            eta=W.FloatSlider(value=1.0, min=0.0, max=1.0, step=0.25, description="eta", continuous_update=False),
            seed=W.IntSlider(value=0, min=0, max=20, description="seed", continuous_update=False),
            other=W.Dropdown(options=[(s.caption(0), i) for i, s in enumerate(self.presets)],
                             value=min(5, len(self.presets) - 1), description="to"),
            t=W.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.1, description="t", continuous_update=False),
            slerp_noise=W.ToggleButton(value=True, description="slerp x_T",
                                       tooltip="off: hold the first image's x_T fixed"),
            target_text=W.Text(value="", description="target", placeholder="e.g. a blue star"),
            source_text=W.Text(value="", description="source", placeholder="the scene's caption"),
            theta=W.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.1, description="theta", continuous_update=False),
        )
        self.images = {v: W.Image(format="png") for v in VIEWS}
        self.outputs = {v: error_output() for v in VIEWS}
        self._draw = {v: guarded(self.outputs[v])(getattr(self, f"_draw_{v}")) for v in VIEWS}
        for name, view in (("source shape colour background word", "reconstruction"), ("eta seed", "variations"),
                           ("other t slerp_noise", "interpolation"), ("target_text source_text theta", "text_diff")):
            for control in name.split():
                getattr(c, control).observe(lambda _, v=view: self.refresh(v), names="value")
        self.refresh()
        save = {v: save_button(lambda v=v: self.grids.get(v), f"unclip_{v}", self.outputs[v]) for v in VIEWS}
        scene_picker = W.VBox([W.HBox([c.source]), W.HBox([c.shape, c.colour, c.background, c.word]),
                               self.images["reconstruction"]])
        self.sections = {
            "reconstruction": figure_panel(scene_picker, (), self.outputs["reconstruction"], save["reconstruction"]),
            "variations": figure_panel(self.images["variations"], [c.eta, c.seed], self.outputs["variations"],
                                       save["variations"]),
            "interpolation": figure_panel(self.images["interpolation"], [c.other, c.t, c.slerp_noise],
                                          self.outputs["interpolation"], save["interpolation"]),
            "text_diff": figure_panel(self.images["text_diff"], [c.target_text, c.source_text, c.theta],
                                      self.outputs["text_diff"], save["text_diff"]),
        }
        self.widget = W.VBox(list(self.sections.values()))

    def section(self, view: str):
        """One view's widgets (its image, controls, output and save button), for a notebook section.
        Without a decoder: the reason, once (the first section asked for), then nothing."""
        if view not in VIEWS:
            raise ValueError(f"view={view!r}; use one of {', '.join(VIEWS)}")
        if self.decoder is None:
            shown, self._reason_shown = getattr(self, "_reason_shown", False), True
            return W.HTML("" if shown else f"<i>{self.reason}</i>")
        return self.sections[view]

    def summary(self) -> str:
        """The checked numbers: the round trip's PSNR and the PSNR with another scene's z_i, or the reason."""
        if self.decoder is None:
            return self.reason
        if not self.numbers:
            return "no reconstruction yet: see the error under the scene view"
        return f"round trip PSNR {self.numbers['psnr']:.0f} dB; wrong z_i {self.numbers['psnr_wrong_z']:.0f} dB"

    def figures(self) -> dict:
        """The last grid of each view, named for `save_figure` / `clipspace tour`."""
        return {f"unclip_{v}": g for v, g in self.grids.items() if g is not None}

    def refresh(self, view: str = "reconstruction") -> None:
        """Redraw `view`; a new scene (the reconstruction view) redraws every view after it."""
        views = VIEWS if view == "reconstruction" else (view,)
        for v in views:
            self._draw[v]()
            if v == "reconstruction" and self._draw[v].last_error is not None:
                return  # no latents for the other views: the error is on screen

    def current_scene(self) -> world.Scene:
        c = self.controls
        if c.source.value < 0:
            return world.single_object_scene(c.shape.value, c.colour.value, c.background.value, c.word.value)
        return self.presets[c.source.value]

    # --- the views: each one library call, its grid shown ----------------------------------------
    def _show(self, view: str, grid) -> None:
        self.grids[view] = grid
        self.images[view].value = png_bytes(grid)

    def _draw_reconstruction(self):
        scene = self.current_scene()
        other = self.presets[(max(self.controls.source.value, 0) + 1) % len(self.presets)]
        size = self.decoder.image_size
        self.latents, result = reconstruction(self.decoder, self.clip, scene.render(size), other.render(size),
                                              steps=self.steps)
        self.scene, self.numbers = scene, result.numbers
        self._show("reconstruction", result.grid)
        print(f"{scene.caption(0)!r}: round trip {result.numbers['psnr']:.1f} dB, "
              f"with another scene's z_i {result.numbers['psnr_wrong_z']:.1f} dB")

    def _draw_variations(self):
        c = self.controls
        self._show("variations", variation_view(self.decoder, self.latents, c.eta.value, n=4, steps=self.steps,
                                                seed=c.seed.value).grid)

    def _draw_interpolation(self):
        c = self.controls
        if c.other.value not in self._inverted:  # inversion only: the target's round trip is never shown
            image = load_images([self.presets[c.other.value].render(self.decoder.image_size)],
                                self.decoder.image_size, square=True)  # as `reconstruction` prepares it
            self._inverted[c.other.value] = invert(self.decoder, self.clip, image, steps=self.steps)
        self._show("interpolation", interpolation_view(self.decoder, self.latents, self._inverted[c.other.value],
                                                       c.t.value, n=5, slerp_noise=c.slerp_noise.value,
                                                       steps=self.steps).grid)

    def default_texts(self) -> tuple[str, str]:
        """(target, source) when the text boxes are empty: the scene's colour swapped, and its caption."""
        obj = self.scene.objects[0]
        return f"a {'blue' if obj.colour != 'blue' else 'red'} {obj.shape}", self.scene.caption(0)

    def _draw_text_diff(self):
        c = self.controls
        target, source = self.default_texts()
        target, source = c.target_text.value or target, c.source_text.value or source
        self._show("text_diff", text_diff_view(self.decoder, self.clip, self.latents, target, source, c.theta.value,
                                               n=5, steps=self.steps).grid)
        print(f"{source!r} -> {target!r}")


OUT_OF_DECODER = ("The offline decoder was trained on the shapes world at 32 px: these images are out of its "
                  "world. The PSNRs are what it reaches on them, not what a decoder trained for your CLIP would.")


class UnclipImagesPanel(Panel):
    """The round trip of the user's images: each one inverted to (z_i, x_T) and decoded back, two ways.

    The first `n` images of an `ImageSourcePanel`, centre-cropped to the decoder's square size
    (`clipspace.photos.square`), are inverted with plain DDIM (one model call a step) and with exact
    inversion (`invert(..., method="fixed_point")`: 1 + iterations calls a step), and decoded at eta 0
    with the same steps. The grid's rows: the images as the decoder sees them, the DDIM round
    trips, the exact ones, each titled with its PSNR. `controls`: iterations (of the exact solve).
    `numbers`: mean PSNR per method; `psnrs`: per image; `latents`: the exact (z_i, x_T); `grid`.
    With the offline decoder and images that are not the world's, the panel says they are out
    of its world (`OUT_OF_DECODER`). `decoder` None: the panel is `reason`, one line.
    """

    def __init__(self, clip, decoder, source, steps: int = 25, n: int = 4, iterations: int = 3, reason: str = ""):
        self.clip, self.decoder, self.source, self.steps, self.n = clip, decoder, source, steps, n
        self.reason = reason or "No decoder pairs with this CLIP."
        self.numbers, self.psnrs, self.latents, self.grid = {}, {}, None, None
        if decoder is None:
            self.controls = SimpleNamespace()
            self.widget = W.HTML(f"<i>{self.reason}</i>")
            return
        self.controls = SimpleNamespace(iterations=W.IntSlider(value=iterations, min=1, max=8, description="iterations",
                                                               continuous_update=False))
        self.note, self.picture, self.output = W.HTML(), W.Image(format="png"), error_output()
        self._draw = guarded(self.output)(self._draw_round_trips)
        self.controls.iterations.observe(lambda _: self.refresh(), names="value")
        source.on_change(lambda _: self.refresh())
        self.refresh()
        self.widget = W.VBox([source.widget, figure_panel(W.VBox([self.note, self.picture]),
                                                          [self.controls.iterations], self.output,
                                                          save_button(lambda: self.grid, "unclip_your_images",
                                                                      self.output))])

    def figures(self) -> dict:
        return {"unclip_your_images": self.grid} if self.grid is not None else {}

    def refresh(self) -> None:
        """Invert the source's first n images both ways, decode them and redraw."""
        self._draw()

    def summary(self) -> str:
        """Mean round-trip PSNR of each method, or the reason there is none."""
        if self.decoder is None:
            return self.reason
        if not self.numbers:
            return "no round trip yet: see the error under the panel"
        calls = self.steps * (1 + self.controls.iterations.value)
        return (f"{self.numbers['n']} images ({self.source.kind}): round trip PSNR, plain DDIM "
                f"{self.numbers['ddim']:.0f} dB ({self.steps} model calls), exact {self.numbers['fixed_point']:.0f} dB "
                f"({calls} calls)")

    def out_of_world(self) -> bool:
        """Whether the decoder is the offline one (trained on the world) and the images are not the world's."""
        from clipspace.unclip.decoder import DEFAULT_CLIP

        return self.source.kind != "world" and getattr(self.decoder, "clip_name", "") == DEFAULT_CLIP

    def _draw_round_trips(self):
        if not self.source.images:  # nothing read yet (an empty upload): keep what is on screen
            return print(NO_IMAGES)
        size, its = self.decoder.image_size, self.controls.iterations.value
        images = [square(im, size) for im in self.source.images[:self.n]]  # as the decoder sees them
        rows, titles = [], []
        for method, kw, label in (("ddim", {}, "DDIM"), ("fixed_point", {"iterations": its}, "exact")):
            lat = invert(self.decoder, self.clip, images, steps=self.steps, method=method, **kw)
            back = decode(self.decoder, lat.z, lat.x_T, steps=self.steps)
            self.psnrs[method] = [float(v) for v in np.atleast_1d(psnr(back, images))]
            rows += back
            titles += [f"{label}: {v:.1f} dB" for v in self.psnrs[method]]
        self.latents = lat
        self.numbers = {"n": len(images), **{m: float(np.mean(v)) for m, v in self.psnrs.items()}}
        self.grid = image_grid(images + rows, ncols=len(images), scale=4, font_size=10,
                               titles=list(self.source.names[:self.n]) + titles)
        self.picture.value = png_bytes(self.grid)
        self.note.value = (f"<i>{OUT_OF_DECODER}</i><br>" if self.out_of_world() else "") + self.summary()
