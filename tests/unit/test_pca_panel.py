"""Notebook 03's panels, driven headless by setting their controls' values, as the sliders in the browser do.

The curves and the k view are checked against scikit-learn's PCA of the same embeddings; the
decode view against `unclip.decode` of `unclip.pca_reconstruct` from the same seeded noise."""
import numpy as np
import pytest
from sklearn.decomposition import PCA

from clipspace import unclip, world
from clipspace.unclip.decoder import build_decoder
from clipspace.figures import image_grid
from clipspace.notebook.pca_panel import PCADecodePanel, PCAPanel
from clipspace.probes.zero_shot import logit_scale

STEPS = 2


@pytest.fixture(scope="module")
def panel(tiny_clip):
    return PCAPanel(tiny_clip, world.mixed_scenes(30), world.single_objects(10), examples=4)


@pytest.fixture(scope="module")
def decoder(tiny_config, tiny_clip):
    return build_decoder(tiny_config(clip_model=tiny_clip.name, clip_embed_dim=tiny_clip.embed_dim), seed=0)


@pytest.fixture(scope="module")
def decoded(panel, decoder, tiny_clip):
    return PCADecodePanel(tiny_clip, decoder, panel.pca, panel.test_scenes, embeddings=panel.test_emb,
                          steps=STEPS, examples=3)


def encode(clip, scenes):
    return clip.encode_images([s.render(clip.image_size) for s in scenes], progress=False)


def test_the_curves_are_sklearns_pca_of_the_scenes(panel, tiny_clip):
    X, T = encode(tiny_clip, panel.scenes), encode(tiny_clip, panel.test_scenes)
    ref = PCA(svd_solver="full").fit(X)
    fig = panel.curves_fig
    np.testing.assert_allclose(fig.data[0].y, np.concatenate([[0], np.cumsum(ref.explained_variance_ratio_)]),
                               atol=1e-6)
    # the held-out line: ||T - T_k||^2 / ||T - mean||^2, T_k rebuilt from the first k components
    Z = ref.transform(T)
    mse = [((T - (ref.mean_ + Z[:, :k] @ ref.components_[:k])) ** 2).sum() / ((T - ref.mean_) ** 2).sum()
           for k in range(ref.n_components_ + 1)]
    np.testing.assert_allclose(fig.data[-1].y, mse, atol=1e-6)
    assert "10 held-out scenes" in fig.data[-1].name
    assert set(panel.figures()) == {"pca_curves", "pca_k_zero_shot"}


@pytest.mark.parametrize("k", [0, 2, 5])
def test_the_k_slider_shows_the_examples_true_class_probability_at_k(panel, tiny_clip, k):
    panel.controls.k.value = k
    assert panel._draw.last_error is None
    T = encode(tiny_clip, panel.test_scenes[:4])
    ref = PCA(svd_solver="full").fit(encode(tiny_clip, panel.scenes))
    rebuilt = ref.mean_ + ref.transform(T)[:, :k] @ ref.components_[:k]
    for trace, factor in ((3, "shape"), (4, "colour")):
        c = panel.classifiers[factor]
        truth = [c.classnames.index(getattr(s.objects[0], factor)) for s in panel.test_scenes[:4]]
        logits = logit_scale(tiny_clip) * (rebuilt / np.linalg.norm(rebuilt, axis=1, keepdims=True)) @ c.weights
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(panel.k_fig.data[trace].y, p[np.arange(4), truth], atol=1e-4)
    row = panel.sweep.set_index("k").loc[k]
    assert panel.k_fig.layout.title.text.startswith(f"k = {k}: mean cosine {row['cosine']:.3f}")
    assert panel.k_fig.layout.shapes[0].x0 == max(k, 1)


def test_the_k_slider_decode_is_decode_of_pca_reconstruct(decoded, panel, decoder):
    assert decoded._draw.last_error is None and set(decoded.grids) == {"strip", "decode"}
    decoded.controls.k.value = 3
    x_T, guidance = unclip.random_noise(decoder, 1, seed=0), float(decoder.config["guidance"])
    z = panel.test_emb[:3]
    images = unclip.decode(decoder, unclip.pca_reconstruct(z, panel.pca, 3), x_T, steps=STEPS, guidance=guidance)
    full = unclip.decode(decoder, z, x_T, steps=STEPS, guidance=guidance)
    originals = [s.render(panel.clip.image_size).resize(images[0].size) for s in panel.test_scenes[:3]]
    want = image_grid(originals + full + images, ncols=3, scale=3)
    np.testing.assert_array_equal(np.asarray(decoded.grids["decode"]), np.asarray(want))
    assert "k = 3" in decoded.caption.value


def test_moving_k_changes_only_the_decoded_row(decoded):
    decoded.controls.k.value = 1
    at_1 = np.asarray(decoded.grids["decode"])
    decoded.controls.k.value = decoded.pca.n_components_
    at_all = np.asarray(decoded.grids["decode"])
    third = at_1.shape[0] // 3
    np.testing.assert_array_equal(at_1[:2 * third], at_all[:2 * third])  # originals and full decodes stay
    assert not np.array_equal(at_1[2 * third:], at_all[2 * third:])


def test_the_strip_decodes_the_first_scene_at_each_k(decoded, panel):
    assert decoded.ks[0] == 0 and decoded.ks[-1] == panel.pca.n_components_  # 0: the mean embedding
    assert list(decoded.figures()) == ["pca_decoded"]
    assert decoded.figures()["pca_decoded"] is decoded.grids["strip"]


def test_without_a_decoder_the_decode_panel_is_the_reason_and_the_k_view_works(panel, tiny_clip):
    why = "No decoder: none installed here"
    p = PCADecodePanel(tiny_clip, None, panel.pca, panel.test_scenes, reason=why)
    assert why in p.widget.value and p.figures() == {} and vars(p.controls) == {}
    panel.controls.k.value = 4
    assert panel._draw.last_error is None and panel.k_fig.layout.title.text.startswith("k = 4:")
    with pytest.raises(ValueError, match="view="):
        panel.section("decode")
