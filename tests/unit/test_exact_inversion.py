"""Fixed-point (exact) inversion: each step solved so that the sampler's own step maps back."""
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from clipspace.errors import InvalidArgumentError
from clipspace.unclip.latents import ddim_invert, ddim_sample, decode, images_to_pixels, invert, psnr
from clipspace.unclip.ood import KINDS, inversion_set
from tests.unit.test_unclip import tiny_decoder, unit


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_each_step_is_solved_against_diffusers_sampler(prediction_type):
    """At the solution, diffusers' own DDIMScheduler.step from x_t lands on the x it came from."""
    dec = tiny_decoder(prediction_type).to(dtype=torch.float64)
    with torch.no_grad():  # a smoother model, as a trained one is: the step is then a contraction in x_t
        dec.unet.conv_out.weight *= 0.05
        dec.unet.conv_out.bias *= 0.05
    x0, z = (torch.rand(2, *dec.latent_shape) * 2 - 1).double(), unit(2).double()
    steps = 4
    x_T = ddim_invert(dec, x0, z, steps=steps, method="fixed_point", iterations=12)
    sched = DDIMScheduler.from_config(dec.scheduler.config)
    sched.set_timesteps(steps)
    x = x_T
    for t in sched.timesteps:  # the independent reference: diffusers' sampler, step by step
        x = sched.step(dec.predict(x, t, z), t, x).prev_sample
    torch.testing.assert_close(x, x0, atol=1e-7, rtol=1e-7)


def test_fixed_point_beats_plain_ddim_and_is_exact_at_guidance(tiny_clip):
    from clipspace import world

    dec = tiny_decoder().to(dtype=torch.float64)
    scenes = world.single_objects(2)
    target = images_to_pixels(scenes, dec.image_size).double()
    got = {}
    for method, guidance in (("ddim", 1.0), ("fixed_point", 1.0), ("fixed_point", 3.0)):
        lat = invert(dec, tiny_clip, scenes, steps=10, guidance=guidance, method=method, iterations=6)
        out = decode(dec, lat.z, lat.x_T, steps=10, guidance=guidance, output="pt").double()
        got[(method, guidance)] = float(psnr(out, target).min())
    assert got[("fixed_point", 1.0)] > 50 and got[("fixed_point", 3.0)] > 50, got  # plain DDIM: ~21 dB here
    assert got[("fixed_point", 1.0)] > got[("ddim", 1.0)] + 20, got


def test_anderson_converges_faster_than_plain_iteration():
    dec = tiny_decoder()
    x0, z = torch.rand(2, *dec.latent_shape) * 2 - 1, unit(2)
    err = {}
    for anderson in (0, 2):
        x_T = ddim_invert(dec, x0, z, steps=5, method="fixed_point", iterations=2, anderson=anderson)
        err[anderson] = (ddim_sample(dec, z, x_T, steps=5) - x0).abs().max().item()
    assert err[2] <= err[0], err


def test_method_arguments_are_checked():
    dec = tiny_decoder()
    x0, z = torch.zeros(1, *dec.latent_shape), unit(1)
    with pytest.raises(InvalidArgumentError, match="method"):
        ddim_invert(dec, x0, z, method="edict")
    with pytest.raises(InvalidArgumentError, match="n must be"):
        ddim_invert(dec, x0, z, method="fixed_point", iterations=0)


def test_the_inversion_set_is_built_here():
    sets = inversion_set(32, n_shapes=3, n_world=2)
    assert list(sets) == list(KINDS)
    for kind, items in sets.items():
        assert items and all(im.size == (32, 32) and im.mode == "RGB" for _, im in items), kind
    a = np.asarray(sets["other_renderer"][0][1], dtype=float)
    assert len(np.unique(a.reshape(-1, 3), axis=0)) > 2  # anti-aliased edges: not the world's flat colours


def test_the_inversion_report_keeps_what_was_written_by_hand_below_its_marker(tmp_path):
    from clipspace.unclip.measure_inversion import KEEP, write_report

    m = {"seconds": 1, "images": {"photos": ["a"], "textures": ["b"], "other_renderer": [1], "world": [1]},
         "curve": [{"method": "ddim", "psnr": 20.0}], "guided": [{"method": "ddim", "psnr": 18.0}],
         "edits": [{"method": "ddim", "colour": 1.0}]}
    out = tmp_path / "report.md"
    write_report(m, out)
    assert KEEP not in out.read_text()  # nothing by hand yet: nothing kept
    out.write_text(out.read_text() + "\n" + KEEP + "\n## By hand\nkept text\n")
    m["curve"][0]["psnr"] = 31.0
    write_report(m, out)
    text = out.read_text()
    assert "31.0" in text and "20.0" not in text  # regenerated above the marker
    assert text.count(KEEP) == 1 and text.endswith("## By hand\nkept text\n")
