"""Image-caption similarities against open_clip's own forward pass; hard negatives are real minimal changes."""
import numpy as np
import pytest
import torch

from clipspace import world
from clipspace.probes.matching import (caption_candidates, caption_scores, hard_negatives, retrieval_accuracy,
                                similarity_matrix)


def test_similarity_matrix_equals_open_clip_forward(tiny_clip):
    scenes = world.mixed_scenes(4)
    images = [s.render(64) for s in scenes]
    captions = [s.caption() for s in scenes] + ["an empty picture"]
    sim = similarity_matrix(tiny_clip, images, captions)
    with torch.no_grad():  # the reference: open_clip's model(images, tokens) as used in training
        pixels = torch.stack([tiny_clip.preprocess(im) for im in images])
        img, txt, _ = tiny_clip.model(pixels, tiny_clip.tokenizer(captions))
    np.testing.assert_allclose(sim, (img @ txt.T).numpy(), atol=1e-5)
    assert sim.shape == (4, 5)
    np.testing.assert_allclose(caption_scores(tiny_clip, images[2], captions), sim[2], atol=1e-6)


def test_hard_negatives_are_distinct_minimal_changes():
    for scene in world.mixed_scenes(12):
        own = scene.caption()
        negs = hard_negatives(scene, n=3, seed=1)
        assert own not in negs and len(set(negs)) == len(negs) and 1 <= len(negs) <= 3
        assert negs == hard_negatives(scene, n=3, seed=1), "deterministic for a seed"
    red_circle = world.Scene((world.Obj("circle", "red"),))
    negs = hard_negatives(red_circle, n=4)
    assert len(negs) == 4
    # one object: each negative changes exactly one of shape or colour
    assert all(("red" in c) != ("circle" in c) for c in negs), negs
    assert caption_candidates(red_circle, 4)[0] == "a red circle" and caption_candidates(red_circle, 4)[1:] == negs


def test_retrieval_accuracy():
    assert retrieval_accuracy(np.eye(3)) == 1.0
    assert retrieval_accuracy(np.array([[0.1, 0.9], [0.2, 0.8]])) == 0.5
    with pytest.raises(ValueError, match="square"):
        retrieval_accuracy(np.ones((2, 3)))
