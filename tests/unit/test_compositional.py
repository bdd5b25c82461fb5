"""Compositional probes: Winoground scores on hand-made matrices (and chance checked by simulation),
world groups that differ only in composition, negation scenes that differ only in colour, and a
blind baseline that flags exactly the probes text alone can solve."""
import re
from collections import Counter

import numpy as np
import pytest
import torch

from clipspace.probes import compositional as comp
from clipspace.probes.binding import wilson_interval, world_binding

WORDS = lambda c: Counter(re.findall(r"\w+", c))  # noqa: E731


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """On a shared 2-core machine torch's second thread mostly waits at barriers (about 1 s per small
    forward pass under load, 0.02 s on one thread); the tiny model needs no more than one."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ---------------------------------------------------------------------------------------------
# Winoground scores
# ---------------------------------------------------------------------------------------------
def test_the_four_outcome_patterns_and_ties():
    S = np.array([
        [[1.0, 0.0], [0.0, 1.0]],  # both: every own pair wins
        [[0.5, 0.4], [0.9, 1.0]],  # text only: each image prefers its caption, caption 0 prefers image 1
        [[0.5, 0.9], [0.4, 1.0]],  # image only: each caption prefers its image, image 0 prefers caption 1
        [[0.0, 1.0], [1.0, 0.0]],  # neither
        [[1.0, 1.0], [1.0, 1.0]],  # all tied: ties lose
        [[1.0, 1.0], [0.0, 1.0]],  # one tie breaks the text score and the image score
    ])
    r = comp.winoground_scores(S)
    np.testing.assert_array_equal(r.text, [1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(r.image, [1, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(r.group, [1, 0, 0, 0, 0, 0])
    assert r.rates() == pytest.approx({"text": 2 / 6, "image": 2 / 6, "group": 1 / 6})
    s = r.summary().set_index("metric")
    assert list(s["kind"]) == ["group"] * 3  # one kind: no 'all' row
    assert s["chance"].to_dict() == pytest.approx({"text": 0.25, "image": 0.25, "group": 1 / 6})
    assert (s.loc["text", "ci_low"], s.loc["text", "ci_high"]) == pytest.approx(wilson_interval(2, 6))
    assert s["blind_score"].isna().all() and not s["text_alone_solves"].any()  # no blind scores given
    assert list(r.table()["group"]) == [True] + [False] * 5


def test_random_matrices_score_at_chance():
    """Independent check of the chance levels: i.i.d. similarities give 1/4, 1/4 and 1/6."""
    n = 40_000
    r = comp.winoground_scores(np.random.default_rng(0).normal(size=(n, 2, 2)))
    for metric, p in (("text", 1 / 4), ("image", 1 / 4), ("group", 1 / 6)):
        assert r.rates()[metric] == pytest.approx(p, abs=4 * np.sqrt(p * (1 - p) / n))
    assert comp.WINOGROUND_CHANCE == pytest.approx({"text": 1 / 4, "image": 1 / 4, "group": 1 / 6})


@pytest.mark.parametrize("S, match", [
    (np.zeros((2, 2)), r"S must have shape \(n_groups, 2, 2\)"),
    (np.zeros((3, 2, 3)), r"S must have shape"),
    (np.zeros((0, 2, 2)), r"S has no groups"),
    (np.array([[[0.0, 1.0], [np.nan, 0.0]]]), r"S has NaN"),
])
def test_bad_similarities_are_refused(S, match):
    with pytest.raises(ValueError, match=match):
        comp.winoground_scores(S)


def test_kinds_must_match_the_groups():
    with pytest.raises(ValueError, match="kinds has 1 labels but S has 2 groups"):
        comp.winoground_scores(np.zeros((2, 2, 2)), kinds=["colour"])
    s = comp.winoground_scores(np.tile(np.eye(2), (3, 1, 1)), kinds=["a", "b", "a"]).summary()
    assert list(dict.fromkeys(s["kind"])) == ["a", "b", "all"]
    assert s.set_index(["kind", "metric"]).loc[("all", "group"), "n"] == 3


# ---------------------------------------------------------------------------------------------
# World groups and negation scenes
# ---------------------------------------------------------------------------------------------
def test_world_groups_differ_only_in_composition():
    groups = comp.winoground_groups(8)
    assert Counter(g[4] for g in groups) == {"colour": 8, "relation": 8}
    for s0, s1, c0, c1, kind in groups:
        assert (c0, c1) == (s0.caption(0), s1.caption(0)) and c0 != c1
        assert WORDS(c0) == WORDS(c1)  # same words, composed differently
        assert s0.render(16).tobytes() != s1.render(16).tobytes()
        assert s0.background == s1.background and s0.text is None and s1.text is None
        for attr in ("shape", "colour", "size"):
            assert Counter(getattr(o, attr) for o in s0.objects) == Counter(getattr(o, attr) for o in s1.objects)
        assert sorted((o.x, o.y) for o in s0.objects) == sorted((o.x, o.y) for o in s1.objects)
        if kind == "colour":  # every object stays put with its shape; only the colours move
            assert [(o.shape, o.x, o.y) for o in s0.objects] == [(o.shape, o.x, o.y) for o in s1.objects]
        else:  # the same (shape, colour) objects, at each other's places
            assert {(o.shape, o.colour): (o.x, o.y) for o in s0.objects} != \
                   {(o.shape, o.colour): (o.x, o.y) for o in s1.objects}
            assert s0.relation() == s1.relation()  # first-named object keeps the relation word
    again = comp.winoground_groups(8)
    assert [(g[0].to_json(), g[1].to_json()) for g in groups] == [(g[0].to_json(), g[1].to_json()) for g in again]
    assert comp.winoground_groups(2, seed=1)[0][2] != groups[0][2]
    with pytest.raises(ValueError, match="Winoground kind"):
        comp.winoground_groups(2, kinds=["count"])


def test_negation_scenes_differ_only_in_one_colour():
    triples = comp.negation_pairs(24)
    assert Counter(c for c, _, _ in triples) == {c: 3 for c in comp.world.COLOURS}
    assert Counter(len(w.objects) for _, w, _ in triples) == {1: 12, 2: 12}
    for colour, with_, without in triples:
        assert sum(o.colour == colour for o in with_.objects) == 1
        assert all(o.colour != colour for o in without.objects)
        assert with_.background == without.background and with_.text == without.text
        changed = [(a, b) for a, b in zip(with_.objects, without.objects) if a != b]
        assert len(changed) == 1
        a, b = changed[0]
        assert a.colour == colour and b.colour != colour
        assert (a.shape, a.size, a.x, a.y, a.rotation) == (b.shape, b.size, b.x, b.y, b.rotation)
        if len(without.objects) == 2:  # still two distinct objects
            assert len({(o.shape, o.colour) for o in without.objects}) == 2
    assert [t[1].to_json() for t in comp.negation_pairs(24)] == [t[1].to_json() for t in triples]
    assert comp.NEGATED.format("red") == "a scene with no red objects"


# ---------------------------------------------------------------------------------------------
# Ranking and the blind baseline
# ---------------------------------------------------------------------------------------------
def test_ranking_wins_split_ties():
    np.testing.assert_allclose(comp.ranking_wins([[1, 0, 0], [1, 1, 0], [1, 1, 1], [0, 1, 0]]), [1, .5, 1 / 3, 0])
    with pytest.raises(ValueError, match="scores must be"):
        comp.ranking_wins([1.0, 2.0])


def _captions(n, d, offset, seed):
    """(n, 2, d) unit 'caption embeddings': true captions shifted by `offset` along one axis."""
    rng = np.random.default_rng(seed)
    T = rng.normal(size=(n, 2, d))
    T[:, 0, 0] += offset
    return T / np.linalg.norm(T, axis=-1, keepdims=True)


def _flag(blind, chance=0.5):
    lo, _ = wilson_interval(comp.ranking_wins(blind).sum(), len(blind))
    return lo > chance


def test_blind_baseline_flags_only_what_text_solves():
    solvable, unsolvable = _captions(200, 16, 1.5, 0), _captions(200, 16, 0.0, 1)
    assert _flag(comp.blind_scores(solvable))  # true captions share a direction: learned from the others
    assert not _flag(comp.blind_scores(unsolvable))
    mean_image = np.eye(16)[0]  # the prior sees the bias only where it lies along the mean image
    assert _flag(comp.blind_scores(solvable, "prior", image_mean=mean_image))
    assert not _flag(comp.blind_scores(solvable, "prior", image_mean=np.eye(16)[1]))
    same = np.repeat(solvable[:, :1], 2, axis=1)  # image ranking: one caption for both candidates
    assert comp.ranking_wins(comp.blind_scores(same)).mean() == 0.5
    with pytest.raises(ValueError, match="image_mean"):
        comp.blind_scores(solvable, "prior")
    with pytest.raises(ValueError, match="method="):
        comp.blind_scores(solvable, "oracle")
    with pytest.raises(ValueError, match="caption_emb must be"):
        comp.blind_scores(solvable[:, 0])


def test_ranking_result_flags_from_the_blind_scores():
    n = 120
    blind = np.c_[np.ones(n), np.zeros(n)]  # text alone always right
    r = comp.RankingResult("p", ["k"] * n, [()] * n, [("a", "b")] * n, np.zeros((n, 2)), blind)
    s = r.summary().iloc[0]
    assert s["score"] == 0.5 and s["blind_score"] == 1.0 and s["text_alone_solves"]
    r.blind = np.zeros((n, 2))
    assert not r.summary().iloc[0]["text_alone_solves"]


# ---------------------------------------------------------------------------------------------
# On a model
# ---------------------------------------------------------------------------------------------
def test_world_winoground_scores_are_the_cosines(tiny_clip):
    r = comp.world_winoground(tiny_clip, 2)
    groups = comp.winoground_groups(2)
    z = tiny_clip.encode_images([s.render(tiny_clip.image_size) for g in groups for s in g[:2]])
    t = tiny_clip.encode_texts([c for g in groups for c in g[2:4]])
    np.testing.assert_allclose(r.similarity.reshape(-1, 2, 2), np.einsum("gid,gjd->gij", z.reshape(4, 2, -1),
                                                                           t.reshape(4, 2, -1)), atol=1e-5)
    assert r.kinds == ["colour"] * 2 + ["relation"] * 2 and r.captions[0] == groups[0][2:4]
    assert r.blind.rates() == {"text": 0.0, "image": 0.0, "group": 0.0}  # by construction


def test_table_on_the_tiny_model(tiny_clip):
    table = comp.compositional_table(tiny_clip, n=3)
    assert list(table.columns) == comp.COLUMNS
    assert list(dict.fromkeys(table["probe"])) == ["winoground", "counting", "negation", "binding"]
    assert len(table) == 3 * 3 + 1 + 2 + 3
    for col in ("score", "ci_low", "ci_high", "blind_score", "blind_ci_low", "blind_ci_high", "chance"):
        assert table[col].between(0, 1).all(), col
    assert (table["ci_low"] <= table["score"] + 1e-9).all() and (table["score"] <= table["ci_high"] + 1e-9).all()
    assert table["text_alone_solves"].dtype == bool
    chance = table.set_index(["probe", "kind", "metric"])["chance"]
    assert chance[("winoground", "colour", "group")] == pytest.approx(1 / 6)
    assert chance[("counting", "1-3", "accuracy")] == pytest.approx(1 / 3)
    assert chance[("negation", "negated", "accuracy")] == 0.5
    neg = table[table["probe"] == "negation"]
    assert (neg["blind_score"] == 0.5).all()  # image candidates share the caption: text cannot choose
    assert (table[table["probe"] == "winoground"]["blind_score"] == 0).all()
    # the binding rows are the binding probe's accuracies
    bind = table[table["probe"] == "binding"].set_index("kind")["score"]
    ref = world_binding(tiny_clip, 3).summary().set_index("kind")["accuracy"]
    for kind in ("colour", "relation", "count"):
        assert bind[kind] == pytest.approx(ref[kind])
    fig = comp.compositional_figure(table)
    assert len(fig.data) == 3 and len(fig.data[0].x) == len(table)
    with pytest.raises(ValueError, match="n=1"):
        comp.compositional_table(tiny_clip, n=1)
    with pytest.raises(ValueError, match="blind="):
        comp.compositional_table(tiny_clip, n=2, blind="oracle")


def test_counting_candidates(tiny_clip):
    r = comp.counting_probe(tiny_clip, 3)
    for (scene,), caps in zip(r.scenes, r.captions):
        assert caps[0] == scene.caption(0) and len(set(caps)) == 3
        assert sorted(c.split()[0] for c in caps) == sorted(["a" if scene.objects[0].colour[0] not in "aeiou" else "an",
                                                              "two", "three"])
    z = tiny_clip.encode_images([r.scenes[0][0].render(tiny_clip.image_size)])
    t = tiny_clip.encode_texts(list(r.captions[0]))
    np.testing.assert_allclose(r.scores[0], t @ z[0], atol=1e-5)
