"""Notebook 08's panel driven headless: every control redraws from the library's numbers."""
import numpy as np
import pytest
import torch

from clipspace.features import naming
from clipspace.features.atlas import fit_atlas
from clipspace.features.splice import Splice
from clipspace.notebook.feature_panel import FeaturePanel
from clipspace.unclip.decoder import build_decoder
from tests.conftest import tiny_decoder_config


@pytest.fixture(scope="module")
def panel(tiny_clip):
    torch.set_num_threads(1)
    atlas = fit_atlas(tiny_clip, n=48, n_features=12, k=3, steps=40)
    vocab = naming.world_vocabulary()
    sp = Splice().fit(atlas.embeddings, tiny_clip.encode_texts(list(vocab["text"])),
                      list(vocab["factor"] + "=" + vocab["value"]))
    decoder = build_decoder(tiny_decoder_config(clip_model=tiny_clip.name, clip_embed_dim=tiny_clip.embed_dim), seed=0)
    return FeaturePanel(tiny_clip, decoder, atlas, sp)


def test_panel_draws_every_view(panel):
    assert not panel.output.outputs, panel.output.outputs
    assert panel.grid_image.value and panel.top_image.value and panel.steer_image.value
    assert len(panel.steering_frames) == 2 * 4  # two base images, four alphas
    assert "coverage" in panel.summary_html.value
    assert set(panel.sections) == {"atlas", "feature", "splice"}


def test_feature_choice_updates_the_page(panel):
    other = panel.controls.feature.options[-1][1]
    panel.controls.feature.value = other
    assert not panel.output.outputs, panel.output.outputs
    a = panel.atlas.activations[:, other]
    assert f"feature {other}" in panel.feature_html.value
    assert sum(panel.histogram.data[0].x) == pytest.approx(a[a > 0].sum(), rel=1e-5)


def test_sparsity_slider_refits(panel):
    panel.controls.k.value = 1
    assert not panel.output.outputs, panel.output.outputs
    assert panel.atlas.sae.k == 1 and ((panel.atlas.activations > 0).sum(1) <= 1).all()
    assert panel.controls.feature.value in [v for _, v in panel.controls.feature.options]


def test_splice_view_follows_scene_and_lam(panel):
    panel.controls.scene.value = 3
    panel.controls.lam.value = 0.05
    dense = (panel.decomposition.weights > 0).sum()
    expected = panel.splice.decompose(panel.atlas.embeddings[3:4], 0.05).weights
    np.testing.assert_allclose(panel.decomposition.weights, expected)
    panel.controls.lam.value = 1.0
    assert (panel.decomposition.weights > 0).sum() <= dense
    assert not panel.output.outputs


def test_without_a_decoder_the_reason_shows(tiny_clip):
    atlas = fit_atlas(tiny_clip, n=30, n_features=8, k=2, steps=20)
    p = FeaturePanel(tiny_clip, None, atlas, None, reason="No decoder pairs with this CLIP")
    assert "No decoder pairs" in p.feature_html.value and not p.output.outputs
