"""Notebook 06's panel: one scene as (z_i, x_T), with reconstruction, variations, interpolation and text diffs.

Each view is one call of `clipspace.unclip.views` (which calls `clipspace.unclip.latents`); this module only
chooses the arguments from the controls and puts the grids on screen. Moving a scene control
re-inverts and refreshes every view; moving a view's own controls redraws that view alone.
Without a decoder that pairs with the CLIP (`decoder_for`), the panel is one line saying why.

    panel = UnclipExplorer(clip, decoder)         # display(panel), or one view a section:
    display(panel.section("variations"))          # reconstruction, variations, interpolation, text_diff
    panel.controls.theta.value = 0.8              # what a slider does; panel.grids["text_diff"] changed
"""
from __future__ import annotations

from types import SimpleNamespace

import ipywidgets as W

from clipspace import world
from clipspace.figures import png_bytes
from clipspace.unclip.latents import invert, load_images
from clipspace.unclip.views import interpolation_view, reconstruction, text_diff_view, variation_view
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
