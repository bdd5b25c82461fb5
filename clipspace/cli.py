"""The `clipspace` command: `clipspace doctor` and `clipspace tour --out DIR`.

Nothing heavy is imported here or by `clipspace doctor` (no torch, torchvision, open_clip, numpy,
nbformat): the doctor has to run where those are broken, and `tour` says what to install when the
notebook tools (the `clipspace[notebooks]` extra) are missing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _doctor(args) -> int:
    from clipspace import doctor

    return doctor.main()


def _tour(args) -> int:
    from clipspace.errors import ClipspaceError
    from clipspace.notebook.tour import require_notebook_tools, run_tour

    try:
        require_notebook_tools()
        runs = run_tour(args.out, args.notebooks, args.names or None, timeout=args.timeout, kernel_name=args.kernel)
    except (FileNotFoundError, ClipspaceError) as e:  # bad arguments or setup: one line, nothing was run
        print(f"clipspace tour: {e}", file=sys.stderr)
        return 2
    failed = [r for r in runs if not r.ok]
    print(f"\n{len(runs) - len(failed)}/{len(runs)} notebooks ran; HTML copies and figures in {args.out} "
          f"(open {Path(args.out) / 'index.html'})")
    for r in failed:
        print(r.describe(), file=sys.stderr)
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    from clipspace.doctor import EXIT_CODES_HELP  # light: the doctor module imports nothing heavy

    ap = argparse.ArgumentParser(prog="clipspace", description="See what CLIP embeddings encode.",
                                 epilog=f"clipspace doctor {EXIT_CODES_HELP}. clipspace tour: 0 all notebooks ran, "
                                        "1 some failed, 2 bad arguments or setup (nothing run).")
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("doctor", help="print versions that matter and known incompatibilities, with fixes",
                       description="Print the versions that matter and the known ways they fail together, "
                                   "each with its fix.", epilog=EXIT_CODES_HELP)
    d.set_defaults(func=_doctor)
    t = sub.add_parser("tour", help="run every notebook headless; write HTML copies and figures",
                       epilog="needs the notebook tools: pip install 'clipspace[notebooks]'. Exit status: 0 all "
                              "notebooks ran, 1 some failed, 2 bad arguments or setup (nothing run).")
    t.add_argument("names", nargs="*", help="only these notebooks (e.g. 00_tour 03_pca); default all")
    t.add_argument("--out", default="build/tour", help="output folder (default build/tour)")
    t.add_argument("--notebooks", default="notebooks", help="folder of .ipynb files (default notebooks)")
    t.add_argument("--timeout", type=int, default=600, help="seconds per cell before giving up (default 600)")
    t.add_argument("--kernel", default="python3", help="Jupyter kernel name (default python3)")
    t.set_defaults(func=_tour)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
