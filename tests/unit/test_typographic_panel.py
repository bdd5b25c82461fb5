"""Notebook 05's panel, driven headless by setting its controls' values and pressing its button.

The bars are checked against zero-shot computed here by hand (prompt-ensembled class embeddings from
clip.encode_texts, cosines with clip.encode_images of the scene rendered with and without the word);
the decode view against `unclip.invert` then `unclip.decode` of the attacked scene."""
import dataclasses

import numpy as np
import pytest
from PIL import Image

from clipspace import unclip, world
from clipspace.unclip.decoder import build_decoder
from clipspace.notebook.typographic_panel import TypographicPanel
from clipspace.probes.typographic import attack_scene
from clipspace.probes.zero_shot import WORLD_TEMPLATES, fill_templates, logit_scale

STEPS = 2


@pytest.fixture(scope="module")
def decoder(tiny_config, tiny_clip):
    return build_decoder(tiny_config(clip_model=tiny_clip.name, clip_embed_dim=tiny_clip.embed_dim), seed=0)


@pytest.fixture(scope="module")
def scenes():
    return world.typographic_scenes(3)


@pytest.fixture
def panel(tiny_clip, decoder, scenes):
    return TypographicPanel(tiny_clip, decoder, scenes, steps=STEPS)


def hand_probs(clip, scene, classnames) -> np.ndarray:
    w = np.stack([clip.encode_texts(fill_templates(c, WORLD_TEMPLATES["shape"])).mean(axis=0) for c in classnames])
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    z = clip.encode_images([scene.render(clip.image_size)], progress=False)[0]
    logits = logit_scale(clip) * w @ (z / np.linalg.norm(z))
    e = np.exp(logits - logits.max())
    return e / e.sum()


def bars(panel) -> dict:
    """{series: {class: probability}} as the grouped bars show them."""
    return {t.name: dict(zip(t.y, t.x)) for t in panel.bars.data}


def test_opens_on_the_first_scene_with_its_own_word_and_hand_computed_bars(panel, tiny_clip, scenes):
    assert all(d.last_error is None for d in panel._draw.values())
    c, text = panel.controls, scenes[0].text
    assert (c.word.value, c.x.value, c.y.value) == (text.word, round(text.x, 2), round(text.y, 2))
    names = list(world.SHAPES)  # the word is a shape name: no extra class
    clean = dataclasses.replace(scenes[0], text=None)
    attacked = attack_scene(clean, text.word, x=c.x.value, y=c.y.value, size=c.size.value, opacity=c.opacity.value)
    got = bars(panel)
    np.testing.assert_allclose([got["clean"][n] for n in names], hand_probs(tiny_clip, clean, names), atol=1e-5)
    np.testing.assert_allclose([got["attacked"][n] for n in names], hand_probs(tiny_clip, attacked, names), atol=1e-5)
    assert set(panel.figures()) == {"typographic_bars", "typographic_decoded"}


def test_a_new_word_is_an_extra_class_and_opacity_zero_hides_it(panel, tiny_clip, scenes):
    panel.controls.word.value = "ipod"
    got = bars(panel)
    assert set(got["attacked"]) == set(world.SHAPES) | {"ipod"}
    assert panel.bars.layout.title.text.startswith('"ipod":')
    panel.controls.opacity.value = 0.0  # an invisible word: the attacked image is the clean one
    got = bars(panel)
    np.testing.assert_allclose([got["attacked"][n] for n in got["clean"]], list(got["clean"].values()), atol=1e-6)
    assert panel.attack.attacked_scene.text.opacity == 0.0


def test_the_scene_slider_resets_word_and_position_and_redraws_once(panel, scenes, monkeypatch):
    calls = []
    original = panel._draw_attack
    monkeypatch.setattr(panel, "_draw_attack", lambda: (calls.append(1), original())[1])
    panel.controls.scene.value = 2
    text = scenes[2].text
    c = panel.controls
    assert (c.word.value, c.x.value, c.y.value) == (text.word, round(text.x, 2), round(text.y, 2))
    assert panel.attack.word == text.word and len(calls) == 1


def test_decode_inverts_the_attacked_scene(panel, decoder, tiny_clip):
    before = panel.grids["decode"]
    panel.controls.word.value = "ipod"
    panel.controls.eta.value = 1.0
    assert panel.grids["decode"] is before  # moving the controls does not decode: the button does
    panel.controls.decode.click()
    assert panel._draw["decode"].last_error is None and panel.grids["decode"] is not before
    latents = unclip.invert(decoder, tiny_clip, [panel.attack.attacked_scene], steps=STEPS)
    recon = unclip.decode(decoder, latents.z, latents.x_T, eta=0.0, steps=STEPS)[0]
    side, pad = decoder.image_size * 4, 4  # image_grid(scale=4): cell 1 is the reconstruction
    cell = np.asarray(panel.grids["decode"])[pad:pad + side, 2 * pad + side:2 * pad + 2 * side]
    want = np.asarray(recon.resize((side, side), Image.NEAREST), dtype=np.int16)
    assert np.abs(cell.astype(np.int16) - want).max() <= 1
    assert panel.grids["decode"].width == pad + 5 * (side + pad)  # attacked, reconstruction, 3 variations


def test_without_a_decoder_the_decode_view_is_the_reason_and_the_attack_works(tiny_clip, scenes):
    why = "No decoder pairs with 'x': the sections that decode are skipped."
    p = TypographicPanel(tiny_clip, None, scenes, reason=why)
    assert why in p.section("decode").value and list(p.figures()) == ["typographic_bars"]
    p.controls.size.value = 0.4
    assert p._draw["attack"].last_error is None and p.attack.attacked_scene.text.size == pytest.approx(0.4)
    p.controls.decode.click()  # no decoder: the button does nothing
    assert p.grids == {}
    with pytest.raises(ValueError, match="view="):
        p.section("nope")
