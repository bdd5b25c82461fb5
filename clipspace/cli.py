"""The `clipspace` command: `clipspace doctor`, `clipspace tour --out DIR` and `clipspace embed SOURCE --out DIR`.

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


def _embed(args) -> int:
    from clipspace.corpus import embed
    from clipspace.errors import ClipspaceError

    try:
        report = embed(args.source, args.out, args.model, pretrained=args.pretrained, engine=args.engine,
                       batch_size=args.batch_size, shard_size=args.shard_size, ray_address=args.address,
                       num_actors=args.actors, actor_cpus=args.actor_cpus, actor_gpus=args.actor_gpus,
                       reader=args.reader, device=args.device, column=args.column)
    except (FileNotFoundError, ClipspaceError) as e:  # bad source, model or folder: one line, nothing written
        print(f"clipspace embed: {e}", file=sys.stderr)
        return 2
    print(report)
    return 0


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
    e = sub.add_parser("embed", help="embed a folder / list of images into parquet shards (resumable)",
                       description="Embed every image of SOURCE (a folder, a text file of paths one a line, or a "
                                   "parquet file with a path column) into parquet shards under --out. A bad file is "
                                   "a row with its reason; rerunning writes only the paths not yet written.",
                       epilog="Open the result with clipspace.corpus.Corpus.open(DIR); see docs/corpus.md. "
                              "Exit status: 0 done (bad files are rows, not errors), 2 bad arguments or setup.")
    e.add_argument("source", help="folder, text file of paths, or .parquet with a path column")
    e.add_argument("--out", required=True, help="corpus folder (created; an existing one is resumed)")
    e.add_argument("--model", default=None, help="open_clip name, folder or hf-hub:org/repo (default: the offline model)")
    e.add_argument("--pretrained", default=None, help="pretrained tag or checkpoint file for --model")
    e.add_argument("--engine", choices=("local", "ray"), default="local", help="local (default) or ray (Ray Data)")
    e.add_argument("--address", default=None, help="Ray cluster address for --engine ray (default: a local Ray)")
    e.add_argument("--actors", type=int, default=None, help="Ray actors (default: one per core locally)")
    e.add_argument("--actor-cpus", type=float, default=None, help="CPUs per Ray actor (default 1)")
    e.add_argument("--actor-gpus", type=float, default=0, help="GPUs per Ray actor (default 0)")
    e.add_argument("--reader", choices=("paths", "binary"), default="paths",
                   help="ray: actors read files (paths, default) or Ray's read_binary_files (binary)")
    e.add_argument("--batch-size", type=int, default=64, help="images per model call (default 64)")
    e.add_argument("--shard-size", type=int, default=4096, help="rows per parquet shard (default 4096)")
    e.add_argument("--column", default="path", help="path column of a parquet SOURCE (default path)")
    e.add_argument("--device", default=None, help="cpu (default), cuda, mps")
    e.set_defaults(func=_embed)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
