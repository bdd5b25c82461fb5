"""Notebook 08's panel: the feature atlas, one feature's page, and the SpLiCE view of one image.

Every number comes from `clipspace.features` (fit_atlas, steering, Splice); this module only picks
arguments from the controls and puts results on screen. Tests drive it headless:

    panel = FeaturePanel(clip, decoder, atlas, splice, reason=why)
    panel.controls.k.value = 4                 # refits the SAE (seconds), redraws atlas and feature page
    panel.controls.feature.value = 12          # histogram, top images, decoded steering strip
    panel.controls.scene.value = 3; panel.controls.lam.value = 0.5   # SpLiCE bars of scene 3
"""
from __future__ import annotations

from types import SimpleNamespace

import ipywidgets as W
import numpy as np
import plotly.graph_objects as go

from clipspace.features.atlas import fit_atlas
from clipspace.features.steering import steer_images
from clipspace.figures import image_grid, png_bytes
from clipspace.notebook.widgets import FigureWidget, Panel, error_output, guarded, put_figure, save_button

THUMB = 64  # thumbnails are drawn at the world's native size
ALPHAS = (0.0, 0.5, 1.0, 1.5)


def _render(item, size: int = THUMB):
    """A thumbnail of a world scene, a path (read by clipspace's image loader) or a PIL image."""
    if hasattr(item, "render"):
        return item.render(size)
    from clipspace.images import load_image

    return load_image(item).convert("RGB").resize((size, size))


def atlas_grid(atlas, n_features: int = 8, per_feature: int = 4):
    """The best `n_features` live features, a row each: their top images, titled with name and score."""
    rows, titles = [], []
    for _, f in atlas.ranked().head(n_features).iterrows():
        top = atlas.top_images(int(f["feature"]), per_feature)
        label = f"f{int(f['feature'])} '{f['name']}'" + (f" AUROC {f['auroc']:.2f}" if "auroc" in f else "")
        for j in range(per_feature):
            rows.append(_render(atlas.images[top[j]]) if j < len(top) else _render_blank())
            titles.append(label if j == 0 else "")
    return image_grid(rows, ncols=per_feature, titles=titles)


def _render_blank():
    from PIL import Image

    return Image.new("RGB", (THUMB, THUMB), "white")


def activation_histogram(atlas, feature: int) -> go.Figure:
    a = atlas.activations[:, feature]
    fig = go.Figure(go.Histogram(x=a[a > 0], nbinsx=30, name="active"))
    fig.update_layout(title=f"feature {feature}: fires on {(a > 0).mean():.1%} of images", height=260, width=380,
                      xaxis_title="activation (where > 0)", yaxis_title="images", margin=dict(l=10, r=10, t=40, b=30))
    return fig


def splice_bars(decomposition, i: int, k: int = 10) -> go.Figure:
    top = decomposition.top(i, k)
    fig = go.Figure(go.Bar(x=[w for _, w in top][::-1], y=[c for c, _ in top][::-1], orientation="h"))
    fig.update_layout(title=f"SpLiCE, lam {decomposition.lam:.2f}: {len(top)} concepts, "
                            f"cosine {decomposition.cosine[i]:.2f}", height=300, width=420,
                      margin=dict(l=10, r=10, t=40, b=30), xaxis_title="weight")
    return fig


class FeaturePanel(Panel):
    """`atlas`: `features.atlas.fit_atlas(...)`; `splice`: a fitted `features.splice.Splice`;
    `decoder`: the unCLIP decoder for steering strips, or None with `reason` shown instead.

    controls: k (SAE sparsity; refits), feature (dropdown of live features, best first), scene and
    lam (SpLiCE). Views (`section(name)`): 'atlas', 'feature', 'splice'."""

    def __init__(self, clip, decoder, atlas, splice=None, reason: str = "", fit_kwargs: dict | None = None):
        self.clip, self.decoder, self.atlas, self.splice, self.reason = clip, decoder, atlas, splice, reason
        self.fit_kwargs = dict(fit_kwargs or {})
        self.output = error_output()
        self.summary_html, self.feature_html = W.HTML(), W.HTML()
        self.grid_image, self.top_image, self.steer_image, self.scene_image = (
            W.Image(format="png") for _ in range(4))
        self.histogram, self.bars, self.steering_frames = None, None, []
        n_scenes = len(atlas.images)
        c = self.controls = SimpleNamespace(
            k=W.IntSlider(value=atlas.sae.k, min=1, max=min(32, atlas.sae.n_features), description="active k",
                          continuous_update=False),
            feature=W.Dropdown(description="feature"),
            scene=W.IntSlider(value=0, min=0, max=n_scenes - 1, description="image", continuous_update=False),
            lam=W.FloatSlider(value=0.3, min=0.0, max=1.0, step=0.05, description="lam", continuous_update=False),
        )
        self._draw = {v: guarded(self.output)(getattr(self, f"_draw_{v}")) for v in ("all", "feature", "splice")}
        self._refit = guarded(self.output)(self._refit_atlas)
        self._quiet = False  # set while the atlas refills the feature list: it draws the page once, after
        c.k.observe(lambda _: self._refit(), names="value")
        c.feature.observe(lambda _: None if self._quiet else self._draw["feature"](), names="value")
        c.scene.observe(lambda _: self._draw["splice"](), names="value")
        c.lam.observe(lambda _: self._draw["splice"](), names="value")
        self._draw["all"]()
        self.histogram = self.histogram or FigureWidget(go.Figure())
        self.bars = self.bars or FigureWidget(go.Figure())
        saves = {v: save_button(fn, stem, self.output) for v, fn, stem in (
            ("atlas", lambda: self.grid_image_pil, "feature_atlas"),
            ("feature", lambda: self.histogram, "feature_histogram"),
            ("splice", lambda: self.bars, "splice_decomposition"))}
        self.sections = {
            "atlas": W.VBox([c.k, self.summary_html, self.grid_image, saves["atlas"], self.output]),
            "feature": W.VBox([c.feature, self.feature_html, W.HBox([self.histogram, self.top_image]),
                               self.steer_image, saves["feature"]]),
            "splice": W.VBox([W.HBox([c.scene, c.lam]), W.HBox([self.scene_image, self.bars]), saves["splice"]]),
        }
        self.widget = W.VBox(list(self.sections.values()))

    def figures(self) -> dict:
        return {"feature_atlas": self.grid_image_pil, "feature_histogram": self.histogram,
                "splice_decomposition": self.bars}

    # --- draws ----------------------------------------------------------------------------------
    def _draw_all(self):
        self._draw_atlas()
        self._draw_splice()

    def _refit_atlas(self):
        self.atlas = fit_atlas(self.clip, images=self.fit_kwargs.get("images"), n=len(self.atlas.images),
                               n_features=self.atlas.sae.n_features, k=self.controls.k.value,
                               steps=self.atlas.sae.steps, seed=self.atlas.sae.seed, vocabulary=self.atlas.vocabulary,
                               embeddings=self.atlas.embeddings)
        self._draw_atlas()

    def _draw_atlas(self):
        s = self.atlas.summary()
        parts = [f"{s['live_features']} of {s['features']} features live"]
        if "coverage" in s:
            parts += [f"coverage {s['coverage']:.2f} (concepts with a feature of AUROC &ge; 0.95)",
                      f"naming accuracy {s['naming_accuracy']:.2f} gap-corrected, "
                      f"{s['naming_accuracy_uncorrected']:.2f} raw"]
        else:
            parts.append("no known factors for these images: names only, unscored")
        self.summary_html.value = "; ".join(parts)
        self.grid_image_pil = atlas_grid(self.atlas)
        self.grid_image.value = png_bytes(self.grid_image_pil)
        ranked = self.atlas.ranked()
        options = [(f"f{int(r.feature)} {r['name']}" + (f" ({r['auroc']:.2f})" if "auroc" in r else ""), int(r.feature))
                   for _, r in ranked.iterrows()]
        feature = self.controls.feature
        keep = feature.value if feature.value in [v for _, v in options] else options[0][1]
        self._quiet = True
        try:
            feature.options, feature.value = options, keep
        finally:
            self._quiet = False
        self._draw_feature()

    def _draw_feature(self):
        f = self.controls.feature.value
        row = self.atlas.scores.loc[f]
        self.histogram = put_figure(self.histogram, activation_histogram(self.atlas, f))
        top = self.atlas.top_images(f, 8)
        if top:
            self.top_image.value = png_bytes(image_grid([_render(self.atlas.images[i]) for i in top], ncols=4))
        text = f"<b>feature {f}</b>: named '{row['name']}' (raw: '{row['raw_name']}')"
        if "auroc" in row and row["best_concept"] is not None:
            text += f"; best concept {row['best_concept']}, AUROC {row['auroc']:.2f}, purity {row['purity']:.2f}"
        self.feature_html.value = text
        if self.decoder is None:
            self.feature_html.value += f"<br><i>{self.reason or 'No decoder: no steering strip.'}</i>"
            return
        # steer the two images the feature fires on least: what it adds is then visible
        base = self.atlas.embeddings[np.argsort(self.atlas.activations[:, f], kind="stable")[:2]]
        self.steering_frames = steer_images(self.decoder, base, self.atlas.sae.components_[f], ALPHAS, steps=25)
        n = len(base)
        order = [a * n + b for b in range(n) for a in range(len(ALPHAS))]  # one row per base image
        self.steer_image.value = png_bytes(image_grid(
            [self.steering_frames[i] for i in order], ncols=len(ALPHAS), scale=2,
            titles=[f"alpha {ALPHAS[i // n]:g}" for i in order]))

    def _draw_splice(self):
        if self.splice is None:
            return
        i = self.controls.scene.value
        self.decomposition = self.splice.decompose(self.atlas.embeddings[i:i + 1], self.controls.lam.value)
        self.bars = put_figure(self.bars, splice_bars(self.decomposition, 0))
        self.scene_image.value = png_bytes(_render(self.atlas.images[i], 128))
