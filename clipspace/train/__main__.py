"""`python -m clipspace.train clip ...` trains the tiny CLIP; `... decoder ...` an unCLIP decoder (the
world's, or of your images with `--images`); `... prior ...` its prior (`--pairs` for yours);
`... embed ...` embeds an image or pair source once, into a parquet the other two read."""
import sys

TRAINERS = ("clip", "decoder", "prior", "embed")


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in TRAINERS:
        sys.exit(f"usage: python -m clipspace.train {{{','.join(TRAINERS)}}} [--help]")
    if argv[0] == "clip":
        from clipspace.train.clip import main as run
    elif argv[0] == "decoder":
        from clipspace.train.decoder import main as run
    elif argv[0] == "prior":
        from clipspace.train.prior import main as run
    else:
        from clipspace.train.data import main as run
    run(argv[1:])


if __name__ == "__main__":
    main()
