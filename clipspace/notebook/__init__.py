"""Notebook panels: each builds its controls and figures from plain arguments and calls library
functions; the notebooks display them. Unit tests drive a panel by setting its controls' values."""
