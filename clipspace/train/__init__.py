"""Training code for the offline default models: `python -m clipspace.train clip|decoder ...`."""


def start_run(args) -> None:
    """What every trainer does first: torch threads, the run directory, train.log, train_args.json."""
    import json
    import logging

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.FileHandler(args.out / "train.log"), logging.StreamHandler()])
    (args.out / "train_args.json").write_text(json.dumps({k: str(v) for k, v in vars(args).items()}, indent=2))
