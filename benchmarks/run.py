"""Run the benchmarks and write benchmarks/REPORT.md and benchmarks/results.json.

    python -m benchmarks.run            # everything, ~10-15 minutes on 2 CPU cores (`make bench`)
    python -m benchmarks.run --quick    # smoke sizes, a minute or two; writes to a temp folder
    python -m benchmarks.run --only encode latency   # re-measures these, keeps the other sections' figures
    python -m benchmarks.run --render   # rewrite REPORT.md from results.json (after editing findings.md)

Each section runs on its own; one that fails is reported as an error with its traceback's last
line, and the others still run. `findings.md` (written by hand: what was profiled, what was fixed,
with figures before and after) is appended to the report.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

from . import report

HERE = Path(__file__).resolve().parent
SECTIONS = ("peak", "encode", "latency", "decoder", "prior", "features", "corpus", "maps", "notebooks", "gpu")


def run_section(name: str, quick: bool, peak_gflops: dict | None) -> dict:
    if name == "peak":
        from . import peak
        return peak.run(quick)
    if name == "encode":
        from . import encode
        return encode.run(quick, peak_gflops)
    if name == "latency":
        from . import latency
        return latency.run(quick)
    if name == "decoder":
        from . import decoder
        return decoder.run(quick, peak_gflops)
    if name == "prior":
        from . import prior
        return prior.run(quick)
    if name == "features":
        from . import features
        return features.run(quick)
    if name == "corpus":
        from . import corpus
        return corpus.run(quick)
    if name == "maps":
        from . import maps
        return maps.run(quick)
    if name == "notebooks":
        from . import notebooks
        return notebooks.run(quick)
    if name == "gpu":
        from . import gpu
        return gpu.run(quick)
    raise ValueError(f"unknown section {name!r}; choose from {SECTIONS}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke sizes (seconds per section), not figures to quote")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    ap.add_argument("--out", type=Path, help="folder for REPORT.md and results.json (default: benchmarks/, "
                                             "or a temp folder with --quick)")
    ap.add_argument("--render", action="store_true", help="only rewrite REPORT.md from results.json and "
                                                              "findings.md (after editing the findings)")
    args = ap.parse_args(argv)
    out = args.out or (Path(tempfile.mkdtemp(prefix="clipspace-bench-quick-")) if args.quick else HERE)
    if args.render:
        import json

        results = json.loads((out / "results.json").read_text())
        findings = (HERE / "findings.md").read_text() if (HERE / "findings.md").is_file() else ""
        report.write_report(results, out, findings)
        print(f"[bench] rewrote {out / 'REPORT.md'} from {out / 'results.json'}")
        return 0
    sections = args.only or SECTIONS

    import torch

    warnings.filterwarnings("ignore", message=".*random weights.*")
    t_start = time.perf_counter()
    results = {"meta": {"date": report.now(), "quick": args.quick,
                        "command": "python -m benchmarks.run" + (" " + " ".join(sys.argv[1:]) if argv is None and sys.argv[1:] else ""),
                        "machine": report.machine_info(), "versions": report.versions(),
                        "notes": [f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, torch threads "
                                  f"{torch.get_num_threads()}"]},
               "sections": {}}
    previous = out / "results.json"
    if args.only and previous.is_file():
        # --only re-measures those sections and keeps the others' last figures (each says when it was measured)
        import json

        results["sections"] = json.loads(previous.read_text()).get("sections", {})
    peak_gflops = (results["sections"].get("peak") or {}).get("peak_gflops")
    for name in sections:
        t0 = time.perf_counter()
        print(f"[bench] {name} ...", flush=True)
        try:
            sec = run_section(name, args.quick, peak_gflops)
        except Exception as e:
            sec = {"title": name, "status": "error", "reason": f"{type(e).__name__}: {e}"[:500], "notes": [],
                   "tables": [], "traceback": traceback.format_exc()[-3000:]}
            print(sec["traceback"], file=sys.stderr)
        sec["seconds"] = time.perf_counter() - t0
        sec["measured"] = report.now()
        sec.setdefault("notes", []).append(f"section time: {sec['seconds']:.0f} s")
        if name == "peak" and sec.get("status") == "ok":
            peak_gflops = sec["peak_gflops"]
        results["sections"][name] = sec
        results["meta"]["duration_s"] = time.perf_counter() - t_start
        findings = (HERE / "findings.md").read_text() if (HERE / "findings.md").is_file() else ""
        report.write_report(results, out, findings)  # after every section: a crash keeps what was measured
        print(f"[bench] {name}: {sec.get('status')} in {sec['seconds']:.0f} s", flush=True)
    print(f"[bench] wrote {out / 'REPORT.md'} and {out / 'results.json'} in {results['meta']['duration_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
