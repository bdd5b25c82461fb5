"""Notebook 07's panel: a caption through both unCLIP stages, the routes to the decoder's z side by side.

Each view is a few calls of `clipspace.unclip.prior` / `clipspace.unclip.generate`; this module only
chooses the arguments from the controls and puts the results on screen. Changing the caption, a
guidance, thresholding or the seed redraws every view. Without a prior and a decoder that pair
with the CLIP (`prior_for`, `decoder_for`), the panel is one line saying why.

    panel = PriorPanel(clip, prior, decoder)         # display(panel), or one view a section:
    display(panel.section("routes"))                 # routes, projection, rerank
    panel.controls.caption.value = "a blue star"     # what typing does; panel.grids["routes"] changed
"""
from __future__ import annotations

from types import SimpleNamespace

import ipywidgets as W
import plotly.graph_objects as go
import torch

from clipspace import world
from clipspace.figures import image_grid, png_bytes
from clipspace.notebook.widgets import Panel, error_output, figure_panel, guarded, put_figure, save_button
from clipspace.unclip.generate import decode_embeddings, rerank
from clipspace.unclip.latents import embed_images, embed_texts

VIEWS = ("routes", "projection", "rerank")
ROUTES = ("zero", "z_t", "prior", "true z_i")  # the Fig. 8 analogue: caption alone (z = 0), z_t as z_i, prior, truth
SCALE = 4  # the decoder's 32 px, enlarged (nearest) so a pixel is visible


def built_caption(shape: str, colour: str) -> str:
    """The caption the world writes for one object of that shape and colour: 'an orange star'."""
    return world.Scene((world.Obj(shape, colour),)).caption(0)


def modality_gap(prior, clip, n: int = 64, seed: int = 0) -> dict:
    """On n held-out single objects: the distance between the mean of z and the mean of the true z_i,
    and their mean cosine, for z = z_t and z = the prior's sample (no decoding: cheap)."""
    scenes = world.single_objects(n)
    z_t = embed_texts(clip, [s.caption(0) for s in scenes])
    z_i = embed_images(clip, [s.render(clip.image_size) for s in scenes])
    z_p = prior.sample([s.caption(0) for s in scenes], seed=seed, clip=clip)  # captions: a stack's prior encodes them itself
    return {f"{name}_{m}": float(v) for name, z in (("z_t", z_t), ("prior", z_p))
            for m, v in (("mean_gap", (z.mean(0) - z_i.mean(0)).norm()), ("cosine", (z * z_i).sum(1).mean()))}


class PriorPanel(Panel):
    """A caption (typed, or built from a shape and a colour) decoded by four routes, its embeddings on
    one projection, and n prior samples reranked by CLIP.

    `controls`: caption, shape, colour (set the caption), prior_guidance, decoder_guidance,
    thresholding, seed, n (samples to rerank). `grids`: the last PIL grid of routes and rerank;
    `numbers`: the routes' cosines and CLIP scores; `projection`: the FigureWidget; `outputs`: each
    view's Output widget; `widget`: the whole panel.
    """

    def __init__(self, clip, prior, decoder, steps: int = 10, prior_steps: int = 25, reason: str = "",
                 reference: int = 48):
        self.clip, self.prior, self.decoder, self.steps, self.prior_steps = clip, prior, decoder, steps, prior_steps
        self.grids, self.numbers, self.projection, self.ranking = {}, {}, None, None
        self.reason = reason or "No prior and decoder pair with this CLIP."
        if prior is None or decoder is None:
            self.controls, self.outputs, self.sections = SimpleNamespace(), {}, {}
            self.widget = W.HTML(f"<i>{self.reason}</i>")
            return
        slider = dict(min=0.0, max=8.0, step=0.5, continuous_update=False)
        c = self.controls = SimpleNamespace(
            caption=W.Text(value=built_caption("square", "red"), description="caption", continuous_update=False,
                           layout=W.Layout(width="420px")),
            shape=W.Dropdown(options=world.SHAPES, value="square", description="shape"),
            colour=W.Dropdown(options=list(world.COLOURS), value="red", description="colour"),
            prior_guidance=W.FloatSlider(value=prior.guidance, description="prior g", **slider),
            decoder_guidance=W.FloatSlider(value=float(getattr(decoder, "config", {}).get("guidance", 1.0)), description="decoder g",
                                           **slider),
            thresholding=W.ToggleButton(value=False, description="thresholding",
                                        tooltip="Imagen's dynamic thresholding in the decoder's sampler"),
            seed=W.IntSlider(value=0, min=0, max=20, description="seed", continuous_update=False),
            n=W.Dropdown(options=[4, 8, 16], value=8, description="rerank n"),
        )
        # The reference clouds of the projection: held-out captions' z_t and their scenes' z_i.
        scenes = world.single_objects(reference)
        self._ref_t = embed_texts(clip, [s.caption(0) for s in scenes])
        self._ref_i = embed_images(clip, [s.render(clip.image_size) for s in scenes])
        from sklearn.decomposition import PCA

        self._pca = PCA(2, svd_solver="full").fit(torch.cat([self._ref_t, self._ref_i]).numpy())
        self.images = {v: W.Image(format="png") for v in ("routes", "rerank")}
        self.outputs = {v: error_output() for v in VIEWS}
        self._draw = {v: guarded(self.outputs[v])(getattr(self, f"_draw_{v}")) for v in VIEWS}
        c.shape.observe(lambda _: self._build(), names="value")
        c.colour.observe(lambda _: self._build(), names="value")
        for name in ("caption", "prior_guidance", "decoder_guidance", "thresholding", "seed"):
            getattr(c, name).observe(lambda _: self.refresh(), names="value")
        c.n.observe(lambda _: self.refresh("rerank"), names="value")
        self.refresh()
        save = {v: save_button(lambda v=v: self.grids.get(v) if v != "projection" else self.projection,
                               f"prior_{v}", self.outputs[v]) for v in VIEWS}
        top = [W.HBox([c.caption, c.shape, c.colour]),
               W.HBox([c.prior_guidance, c.decoder_guidance, c.thresholding, c.seed])]
        self.sections = {
            "routes": figure_panel(W.VBox([*top, self.images["routes"]]), (), self.outputs["routes"], save["routes"]),
            "projection": figure_panel(self.projection, (), self.outputs["projection"], save["projection"]),
            "rerank": figure_panel(self.images["rerank"], [c.n], self.outputs["rerank"], save["rerank"]),
        }
        self.widget = W.VBox(list(self.sections.values()))

    def section(self, view: str):
        """One view's widgets, for a notebook section. Without a prior or decoder: the reason, once."""
        if view not in VIEWS:
            raise ValueError(f"view={view!r}; use one of {', '.join(VIEWS)}")
        if self.prior is None or self.decoder is None:
            shown, self._reason_shown = getattr(self, "_reason_shown", False), True
            return W.HTML("" if shown else f"<i>{self.reason}</i>")
        return self.sections[view]

    def summary(self) -> str:
        """The checked numbers: each route's cosine to the true z_i and CLIP score with the caption."""
        if self.prior is None or self.decoder is None:
            return self.reason
        if not self.numbers:
            return "no routes yet: see the error under the routes view"
        return "; ".join(f"{r}: cos to z_i {self.numbers[r]['cosine']:.2f}, image-caption {self.numbers[r]['score']:.2f}"
                         for r in ROUTES if r in self.numbers)

    def figures(self) -> dict:
        out = {f"prior_{v}": g for v, g in self.grids.items() if g is not None}
        if self.projection is not None:
            out["prior_projection"] = self.projection
        return out

    def refresh(self, view: str | None = None) -> None:
        """Redraw `view` (None: every view; the projection uses the routes' embeddings)."""
        for v in (VIEWS if view is None else (view,)):
            self._draw[v]()

    # --- what the controls say ---------------------------------------------------------------------
    def _build(self) -> None:
        self.controls.caption.value = built_caption(self.controls.shape.value, self.controls.colour.value)

    def current_scene(self) -> world.Scene | None:
        """The world scene the caption names, when it is a built one (so it has a true z_i), else None."""
        c = self.controls
        for shape in world.SHAPES:
            for colour in world.COLOURS:
                if c.caption.value.strip() == built_caption(shape, colour):
                    return world.single_object_scene(shape, colour)
        return None

    def _guidance(self) -> tuple[float, float]:
        return float(self.controls.prior_guidance.value), float(self.controls.decoder_guidance.value)

    # --- the views ------------------------------------------------------------------------------------
    def _show(self, view: str, grid) -> None:
        self.grids[view] = grid
        self.images[view].value = png_bytes(grid)

    def _draw_routes(self):
        c = self.controls
        pg, dg = self._guidance()
        caption, scene = c.caption.value, self.current_scene()
        z_t = embed_texts(self.clip, [caption])
        z_p = self.prior.sample([caption], guidance=pg, steps=self.prior_steps, seed=c.seed.value, clip=self.clip)
        z_i = embed_images(self.clip, [scene.render(self.clip.image_size)]) if scene is not None else None
        zs = {"zero": torch.zeros_like(z_t), "z_t": z_t, "prior": z_p, **({"true z_i": z_i} if z_i is not None else {})}
        names = list(zs)
        images = decode_embeddings(self.decoder, torch.cat([zs[r] for r in names]), seed=c.seed.value,
                                   steps=self.steps, guidance=dg, thresholding=c.thresholding.value)
        scores = rerank(self.clip, images, caption).scores
        ref = z_i if z_i is not None else z_t
        self.numbers = {r: {"cosine": float((zs[r] * ref).sum()), "score": float(scores[k])} for k, r in enumerate(names)}
        self._z = {"z_t": z_t, "prior": z_p, "true z_i": z_i}
        titles = [f"{r}: cos {self.numbers[r]['cosine']:.2f}, clip {self.numbers[r]['score']:.2f}" for r in names]
        self._show("routes", image_grid(images, titles=titles, scale=SCALE))
        print(f"{caption!r}: " + ("cosines to the true z_i of the scene it names" if z_i is not None else
                                  "no world scene named, so cosines are to z_t") +
              f"; prior guidance {pg}, decoder guidance {dg}" + (", thresholding" if c.thresholding.value else ""))

    def _draw_projection(self):
        c = self.controls
        pg, _ = self._guidance()
        z_t = self._z["z_t"]
        samples = self.prior.sample([c.caption.value], n=16, guidance=pg, steps=self.prior_steps, seed=c.seed.value,
                                    clip=self.clip)
        p = self._pca.transform
        traces = [go.Scatter(x=xy[:, 0], y=xy[:, 1], mode="markers", name=name, marker=marker)
                  for name, xy, marker in (
                      ("held-out z_t", p(self._ref_t.numpy()), dict(color="#9ecae1", size=6)),
                      ("held-out z_i", p(self._ref_i.numpy()), dict(color="#fdae6b", size=6)),
                      ("this caption's z_t", p(z_t.numpy()), dict(color="#08519c", size=14, symbol="star")),
                      ("prior samples", p(samples.numpy()), dict(color="#a63603", size=9, symbol="circle-open")))]
        if self._z["true z_i"] is not None:
            traces.append(go.Scatter(x=p(self._z["true z_i"].numpy())[:, 0], y=p(self._z["true z_i"].numpy())[:, 1],
                                     mode="markers", name="its scene's z_i",
                                     marker=dict(color="#7f2704", size=14, symbol="diamond")))
        fig = go.Figure(traces)
        fig.update_layout(title="z_t, the prior's z and z_i on one PCA projection (fitted on both clouds)",
                          height=420, width=640, margin=dict(l=10, r=10, t=50, b=10),
                          xaxis=dict(title="PC 1"), yaxis=dict(title="PC 2"))
        self.projection = put_figure(self.projection, fig)

    def _draw_rerank(self):
        c = self.controls
        pg, dg = self._guidance()
        caption = c.caption.value
        z = self.prior.sample([caption], n=c.n.value, guidance=pg, steps=self.prior_steps, seed=c.seed.value,
                              clip=self.clip)
        images = decode_embeddings(self.decoder, z, seed=c.seed.value, steps=self.steps, guidance=dg,
                                   thresholding=c.thresholding.value)
        self.ranking = rerank(self.clip, images, caption)
        order = self.ranking.order
        titles = [("top " if k == 0 else "bottom " if k == len(order) - 1 else "") + f"{self.ranking.scores[i]:.2f}"
                  for k, i in enumerate(order)]
        self._show("rerank", image_grid([images[i] for i in order], ncols=min(len(order), 8), titles=titles,
                                        scale=SCALE // 2))
        print(f"{len(order)} prior samples of {caption!r}, ranked by CLIP score with it (best first)")
