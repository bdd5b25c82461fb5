"""Training code for the offline default models: `python -m clipspace.train clip|decoder ...`."""
