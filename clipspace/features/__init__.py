"""What the directions of an embedding mean, scored against the world's known factors.

- `sae`: a TopK sparse autoencoder (a dictionary of directions) over image or text embeddings;
- `naming`: each direction named by its nearest vocabulary text, with or without the gap correction;
- `scoring`: AUROC, purity, coverage and naming accuracy against each scene's factor values;
- `splice`: SpLiCE decompositions into non-negative sparse mixes of concept words;
- `steering`: a direction added to an embedding, decoded by unCLIP and read back by factor probes;
- `atlas`: all of the above on one set of images, what notebook 08 and `python -m clipspace.features.measure` use.
"""
