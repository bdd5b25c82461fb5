"""`python -m clipspace.train clip ...` trains the tiny CLIP; `... decoder ...` the unCLIP decoder."""
import sys


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("clip", "decoder"):
        sys.exit("usage: python -m clipspace.train {clip,decoder} [--help]")
    if argv[0] == "clip":
        from clipspace.train.clip import main as run
    else:
        from clipspace.train.decoder import main as run
    run(argv[1:])


if __name__ == "__main__":
    main()
