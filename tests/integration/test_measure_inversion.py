"""The exact-inversion report's edits run on the shipped decoder: every edit, both methods, seeded."""
from clipspace.factory import load_clip
from clipspace.unclip.decoder import load_decoder
from clipspace.unclip.measure_inversion import measure_edits

KEYS = {"variation_colour", "variation_shape", "text_diff_new_colour", "text_diff_shape_kept", "interpolation_ends_kept"}


def test_edits_from_both_methods_are_judged_and_repeat():
    clip = load_clip()
    decoder = load_decoder(clip=clip)
    a = measure_edits(decoder, clip, steps=4, quick=True)
    assert [r["method"] for r in a] == ["ddim", "fixed_point"]
    for row in a:
        assert KEYS <= set(row) and all(0.0 <= row[k] <= 1.0 for k in KEYS)
    assert measure_edits(decoder, clip, steps=4, quick=True) == a  # seeded: the same numbers again
