"""Training code: `python -m clipspace.train clip|decoder|prior|embed ...` (the offline default models,
and decoders and priors for any CLIP on your own images: see docs/training-any-clip.md)."""


def start_run(args) -> None:
    """What every trainer does first: torch threads, the run directory, train.log, train_args.json.

    train.log gets this run's clipspace log lines even when the process already has logging set up
    (a notebook, pytest, a second run in one process): its file handler replaces the previous run's."""
    import json
    import logging

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    fmt = "%(asctime)s %(message)s"
    logging.basicConfig(level=logging.INFO, format=fmt, handlers=[logging.StreamHandler()])  # no-op if set up
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "clipspace_run", False)]:
        root.removeHandler(old)
        old.close()
    handler = logging.FileHandler(args.out / "train.log")
    handler.setFormatter(logging.Formatter(fmt))
    handler.clipspace_run = True
    root.addHandler(handler)
    logging.getLogger("clipspace").setLevel(logging.INFO)
    (args.out / "train_args.json").write_text(json.dumps({k: str(v) for k, v in vars(args).items()}, indent=2))
