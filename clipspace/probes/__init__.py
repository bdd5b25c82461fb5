"""Probes with a known answer: zero-shot classification with prompt ensembles, attribute binding,
typographic attacks, linear probes of the world's factors, image-caption matching with hard negatives."""
