"""Notebook 03's panels: how many principal components the image embeddings use, and what the first k keep.

`PCAPanel` fits `clipspace.maps.pca.EmbeddingPCA` on the image embeddings of some scenes and shows
`pca_curves` (explained variance, reconstruction error) and `k_sweep` (what zero-shot still reads
from held-out embeddings rebuilt from k components). `PCADecodePanel` decodes such rebuilt
embeddings with the unCLIP decoder (`clipspace.unclip.latents.pca_decode`, `pca_reconstruct`, `decode`).
Every number is one library call; these classes only choose the arguments from the controls and
put the results on screen. Without a decoder (`decoder_for`), the decode panel is one line saying why.

    panel = PCAPanel(clip, world.mixed_scenes(1000), world.single_objects(200))
    panel.section("curves"); panel.section("k_sweep")      # or display(panel) for both
    panel.controls.k.value = 2                             # what the slider does; panel.k_fig changed
    decoded = PCADecodePanel(clip, decoder, panel.pca, panel.test_scenes, embeddings=panel.test_emb, reason=why)
    decoded.controls.k.value = 4                           # decoded.grids["decode"] changed
    yours = PCAProjectionPanel(clip, panel, ImageSourcePanel(clip, presets=panel.test_scenes[:24]))
    yours.source.controls.kind.value = "photos"            # the user's images projected on the world's PCA
"""
from __future__ import annotations

from types import SimpleNamespace

import ipywidgets as W
import numpy as np
from plotly.subplots import make_subplots

from clipspace import world
from clipspace.figures import image_grid, png_bytes
from clipspace.maps.pca import EmbeddingPCA, k_for_mse, k_sweep, pca_curves, pca_figure
from clipspace.unclip.latents import decode, pca_decode, pca_reconstruct, random_noise
from clipspace.notebook.image_source_panel import NO_IMAGES
from clipspace.notebook.widgets import FigureWidget, Panel, error_output, figure_panel, guarded, save_button
from clipspace.probes.zero_shot import WORLD_TEMPLATES, ZeroShotClassifier, world_classnames, world_labels

VIEWS = ("curves", "k_sweep")
STRIP_KS = (0, 1, 2, 4, 8, 16, 32, 64)  # the strip's k (0: the mean embedding), then every component


class PCAPanel(Panel):
    """PCA of image embeddings: the curves against k, and zero-shot on held-out embeddings rebuilt from k components.

    `controls`: k (components kept). Fitted on `scenes` (default 1,000 of the training mixture),
    checked on `test_scenes` (default 200 held-out single objects), whose first `examples` show
    their true-class probabilities at k. Results: `emb`, `pca`, `curves`, `test_emb`,
    `test_curves`, `classifiers`, `true`, `sweep`; figures `curves_fig`, `k_fig` (updated in place);
    `outputs`: each view's Output widget; `widget`: both views.
    """

    def __init__(self, clip, scenes=None, test_scenes=None, examples: int = 8):
        self.clip = clip
        self.scenes = list(world.mixed_scenes(1000) if scenes is None else scenes)
        self.test_scenes = list(world.single_objects(200) if test_scenes is None else test_scenes)
        self.emb = clip.encode_images([s.render(clip.image_size) for s in self.scenes], progress=False)
        self.pca = EmbeddingPCA().fit(self.emb)
        self.curves = pca_curves(self.pca, self.emb)
        self.test_pictures = [s.render(clip.image_size) for s in self.test_scenes]
        self.test_emb = clip.encode_images(self.test_pictures, progress=False)
        self.test_curves = pca_curves(self.pca, self.test_emb)
        self.classifiers = {f: ZeroShotClassifier.from_clip(clip, world_classnames(f), WORLD_TEMPLATES[f])
                            for f in ("shape", "colour")}
        self.true = {f: [c.classnames.index(name) for name in world_labels(self.test_scenes, f)]
                     for f, c in self.classifiers.items()}
        self.sweep = k_sweep(self.pca, self.test_emb, weights={f: c.weights for f, c in self.classifiers.items()},
                             labels=self.true)
        self.examples = np.arange(min(examples, len(self.test_scenes)))

        self.controls = SimpleNamespace(k=W.IntSlider(value=min(8, self.pca.n_components_), min=0,
                                                      max=self.pca.n_components_, description="k",
                                                      continuous_update=False, layout=W.Layout(width="500px")))
        self.outputs = {v: error_output() for v in VIEWS}
        self.curves_fig = FigureWidget(pca_figure(self.curves, dim=clip.embed_dim,
                                                  title=f"PCA of {len(self.emb)} image embeddings ({clip.name})"))
        self.curves_fig.add_scatter(x=self.test_curves["k"], y=self.test_curves["relative_mse"],
                                    name=f"relative MSE, {len(self.test_emb)} held-out scenes", line=dict(dash="dot"))
        self.k_fig = FigureWidget(self._k_figure())
        self._draw = guarded(self.outputs["k_sweep"])(self._draw_k)
        self.controls.k.observe(lambda _: self.refresh(), names="value")
        self.refresh()
        self.sections = {
            "curves": figure_panel(self.curves_fig, (), self.outputs["curves"],
                                   save_button(lambda: self.curves_fig, "pca_curves", self.outputs["curves"])),
            "k_sweep": figure_panel(self.k_fig, [self.controls.k], self.outputs["k_sweep"],
                                    save_button(lambda: self.k_fig, "pca_k_zero_shot", self.outputs["k_sweep"])),
        }
        self.widget = W.VBox(list(self.sections.values()))

    def figures(self) -> dict:
        """The curves and the k figure, named for `save_figure` / `clipspace tour`."""
        return {"pca_curves": self.curves_fig, "pca_k_zero_shot": self.k_fig}

    def refresh(self) -> None:
        """Redraw the k figure at the slider's k."""
        self._draw()

    def example_probs(self, k: int) -> dict:
        """{factor: (examples,) probability of the true class} for the examples rebuilt from k components."""
        rebuilt = self.pca.reconstruct(self.test_emb[self.examples], k)
        return {f: c.classify(rebuilt).probs[np.arange(len(self.examples)), np.asarray(self.true[f])[self.examples]]
                for f, c in self.classifiers.items()}

    def _k_figure(self):
        sweep, n = self.sweep, len(self.examples)
        names = [f"{i}: {self.test_scenes[i].caption(0)}" for i in self.examples]
        fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45],
                            subplot_titles=("held-out scenes, rebuilt from k components", f"{n} examples at k"))
        fig.add_scatter(x=sweep["k"], y=sweep["cosine"], name="mean cosine to the original", row=1, col=1)
        fig.add_scatter(x=sweep["k"], y=sweep["shape_accuracy"], name="zero-shot shape accuracy", row=1, col=1)
        fig.add_scatter(x=sweep["k"], y=sweep["colour_accuracy"], name="zero-shot colour accuracy", row=1, col=1)
        fig.add_bar(x=names, y=np.zeros(n), name="p(true shape)", row=1, col=2)
        fig.add_bar(x=names, y=np.zeros(n), name="p(true colour)", row=1, col=2)
        fig.add_vline(x=0, line_dash="dot", row=1, col=1)
        fig.update_xaxes(title_text="k (principal components kept)", type="log", row=1, col=1)
        fig.update_xaxes(showticklabels=False, row=1, col=2)
        fig.update_yaxes(range=[0, 1.02])
        fig.update_layout(height=430, barmode="group", legend=dict(orientation="h", y=-0.2), margin=dict(t=70))
        return fig

    def _draw_k(self):
        k = self.controls.k.value
        row = self.sweep.set_index("k").loc[k]
        probs = self.example_probs(k)
        with self.k_fig.batch_update():
            self.k_fig.data[3].y, self.k_fig.data[4].y = probs["shape"], probs["colour"]
            self.k_fig.layout.shapes[0].update(x0=max(k, 1), x1=max(k, 1))  # log axis: k = 0 drawn at 1
            self.k_fig.layout.title = (f"k = {k}: mean cosine {row['cosine']:.3f}, shape accuracy "
                                       f"{row['shape_accuracy']:.0%}, colour accuracy {row['colour_accuracy']:.0%}")


class PCADecodePanel(Panel):
    """Embeddings rebuilt from their first k principal components, decoded with the unCLIP decoder.

    Every decode starts from the same seeded noise x_T, so only the embedding changes between images.
    The strip: the first scene decoded at k = 1, 2, 4, ... and every component. The k view: the first
    `examples` scenes (originals, decoded full embeddings, decoded from the first k components).
    `controls`: k. `grids`: the last PIL grid of each ("strip", "decode"); `outputs`: their Output
    widgets. `embeddings`: the scenes' image embeddings, if already computed (else encoded here).
    `decoder` None: the panel is `reason`, one line, and decodes nothing.
    """

    def __init__(self, clip, decoder, pca, scenes, embeddings=None, reason: str = "", steps: int = 20,
                 examples: int = 8):
        self.clip, self.decoder, self.pca, self.steps = clip, decoder, pca, steps
        self.reason = reason or "No decoder pairs with this CLIP."
        self.grids = {}
        if decoder is None:
            self.controls, self.outputs = SimpleNamespace(), {}
            self.widget = W.HTML(f"<i>{self.reason}</i>")
            return
        n = min(examples, len(scenes))
        self.scenes = list(scenes)[:n]
        self.pictures = [s.render(clip.image_size) for s in self.scenes]
        self.emb = (clip.encode_images(self.pictures, progress=False) if embeddings is None
                    else np.asarray(embeddings)[:n])
        self.guidance = float(getattr(decoder, "config", {}).get("guidance", 1.0))  # pretrained stacks have no config
        self.x_T = random_noise(decoder, 1, seed=0)  # one noise for every decode
        self.ks = [k for k in STRIP_KS if k < pca.n_components_] + [pca.n_components_]
        self.controls = SimpleNamespace(k=W.IntSlider(value=min(8, pca.n_components_), min=0,
                                                      max=pca.n_components_, description="k",
                                                      continuous_update=False, layout=W.Layout(width="500px")))
        self.images = {v: W.Image(format="png") for v in ("strip", "decode")}
        self.caption = W.HTML()
        self.outputs = {v: error_output() for v in ("strip", "decode")}
        self.full_decoded = None
        guarded(self.outputs["strip"])(self._draw_strip)()
        self._draw = guarded(self.outputs["decode"])(self._draw_decode)
        self.controls.k.observe(lambda _: self.refresh(), names="value")
        self.refresh()
        save = {v: save_button(lambda v=v: self.grids.get(v), stem, self.outputs[v])
                for v, stem in (("strip", "pca_decoded"), ("decode", "pca_k_decoded"))}
        self.widget = W.VBox([figure_panel(self.images["strip"], (), self.outputs["strip"], save["strip"]),
                              figure_panel(W.VBox([self.caption, self.images["decode"]]), [self.controls.k],
                                           self.outputs["decode"], save["decode"])])

    def figures(self) -> dict:
        """The strip (k growing, one scene), named for `save_figure` / `clipspace tour`; none without a decoder."""
        return {"pca_decoded": self.grids["strip"]} if "strip" in self.grids else {}

    def refresh(self) -> None:
        """Decode the examples at the slider's k."""
        self._draw()

    def _draw_strip(self):
        strip = pca_decode(self.decoder, self.emb[0], self.x_T, self.pca, ks=self.ks, steps=self.steps,
                           guidance=self.guidance)
        self.grids["strip"] = image_grid([self.pictures[0].resize(strip[0].size)] + strip, scale=3, font_size=10,
                                         titles=["original"] + [f"k = {k}" for k in self.ks])
        self.images["strip"].value = png_bytes(self.grids["strip"])

    def _draw_decode(self):
        k = self.controls.k.value
        if self.full_decoded is None:
            self.full_decoded = decode(self.decoder, self.emb, self.x_T, steps=self.steps, guidance=self.guidance)
        z = pca_reconstruct(self.emb, self.pca, k)
        images = decode(self.decoder, z, self.x_T, steps=self.steps, guidance=self.guidance)
        size = images[0].size
        self.grids["decode"] = image_grid([p.resize(size) for p in self.pictures] + self.full_decoded + images,
                                          ncols=len(self.pictures), scale=3)
        self.images["decode"].value = png_bytes(self.grids["decode"])
        self.caption.value = (f"<b>rows:</b> originals; decoded full embeddings; decoded from the first "
                              f"<b>k = {k}</b> components (same noise x_T for all)")


class PCAProjectionPanel(Panel):
    """The user's images (an `ImageSourcePanel`) projected on the PCA a `PCAPanel` fitted to world scenes.

    Left: the first two principal components of the fitted scenes (grey) and of the source's
    images. Right, against k: the relative reconstruction error and the mean cosine to the
    original of the source's images next to the held-out world scenes' (`pca_curves`, `k_sweep`
    of the same fitted PCA). An image far from the world needs more components, or is never
    rebuilt well: its directions are not among the world's. Re-run on every source change.
    `curves`, `sweep`: the source images' tables (`names`: theirs); `fig`: the FigureWidget; `output`: errors.
    """

    def __init__(self, clip, pca_panel: PCAPanel, source):
        self.clip, self.fitted, self.source = clip, pca_panel, source
        self.pca = pca_panel.pca
        self.world_2d = self.pca.transform(pca_panel.emb, 2)
        self.world_sweep = k_sweep(self.pca, pca_panel.test_emb)
        self.curves = self.sweep = None
        self.names = []
        self.output = error_output()
        self.fig = FigureWidget(self._figure())
        self._draw = guarded(self.output)(self._draw_source)
        source.on_change(lambda _: self.refresh())
        self.refresh()
        self.widget = W.VBox([source.widget, figure_panel(self.fig, (), self.output,
                                                          save_button(lambda: self.fig, "pca_your_images",
                                                                      self.output))])

    def figures(self) -> dict:
        return {"pca_your_images": self.fig}

    def refresh(self) -> None:
        """Embed the source's images (once per read), project them and redraw."""
        self._draw()

    def summary(self) -> str:
        """k for 1% error and the mean cosine at k = 8, for the source's images and the held-out world scenes."""
        k_yours, k_world = (_k_text(k_for_mse(c, 0.01)) for c in (self.curves, self.fitted.test_curves))
        k8 = min(8, self.pca.n_components_)
        cos = lambda sweep: float(sweep.set_index("k").loc[k8, "cosine"])  # noqa: E731
        return (f"{len(self.names)} images ({self.source.kind}): 1% error at {k_yours} "
                f"(held-out world scenes: {k_world}); mean cosine at k = {k8}: {cos(self.sweep):.3f} "
                f"(world {cos(self.world_sweep):.3f})")

    def _figure(self):
        t = self.fitted.test_curves
        fig = make_subplots(rows=1, cols=2, subplot_titles=("first two principal components",
                                                            "rebuilt from the first k components"))
        fig.add_scattergl(x=self.world_2d[:, 0], y=self.world_2d[:, 1], mode="markers", name="world scenes (fitted)",
                          marker=dict(color="lightgrey", size=5), text=[s.caption(0) for s in self.fitted.scenes],
                          hoverinfo="text", row=1, col=1)
        fig.add_scatter(x=[], y=[], mode="markers", name="your images", marker=dict(color="#d62728", size=9),
                        hoverinfo="text", row=1, col=1)
        fig.add_scatter(x=t["k"], y=t["relative_mse"], name="relative MSE, held-out world", line=dict(dash="dot",
                        color="#1f77b4"), row=1, col=2)
        fig.add_scatter(x=self.world_sweep["k"], y=self.world_sweep["cosine"], name="cosine, held-out world",
                        line=dict(dash="dot", color="#2ca02c"), row=1, col=2)
        fig.add_scatter(x=[], y=[], name="relative MSE, your images", line=dict(color="#1f77b4"), row=1, col=2)
        fig.add_scatter(x=[], y=[], name="cosine, your images", line=dict(color="#2ca02c"), row=1, col=2)
        fig.update_xaxes(title_text="PC 1", row=1, col=1)
        fig.update_yaxes(title_text="PC 2", row=1, col=1)
        fig.update_xaxes(title_text="k", type="log", row=1, col=2)
        fig.update_yaxes(range=[0, 1.02], row=1, col=2)
        fig.update_layout(height=430, legend=dict(orientation="h", y=-0.2), margin=dict(t=70))
        return fig

    def _draw_source(self):
        if not self.source.images:  # nothing read yet (an empty upload): keep what is on screen
            return print(NO_IMAGES)
        z = self.source.embeddings()
        self.names = list(self.source.names)
        self.curves, self.sweep = pca_curves(self.pca, z), k_sweep(self.pca, z)
        xy = self.pca.transform(z, 2)
        with self.fig.batch_update():
            self.fig.data[1].x, self.fig.data[1].y, self.fig.data[1].text = xy[:, 0], xy[:, 1], self.names
            self.fig.data[4].x, self.fig.data[4].y = self.curves["k"], self.curves["relative_mse"]
            self.fig.data[5].x, self.fig.data[5].y = self.sweep["k"], self.sweep["cosine"]
            self.fig.layout.title = self.summary()


def _k_text(k) -> str:
    return "no k" if k is None else f"k = {k}"
