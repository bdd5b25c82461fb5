"""Where embeddings lie: projections (PCA, UMAP, t-SNE, cached), PCA analysis and reconstruction, and
the interactive embedding map with thumbnails."""
