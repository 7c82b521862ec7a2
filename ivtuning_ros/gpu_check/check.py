"""The GPU check (`make gpu-check`, `python3 tools/gpu_check.py`): environment facts, the
CUDA tests, engine parity CUDA vs CPU, engine latency of the real-time and Swin-L DINO
models (eager fp32, AMP fp16 / bf16, AMP + CUDA graphs), ONNX Runtime's CUDA provider and
TensorRT, each in a time box; one JSON report and a short log (README "GPU check").

Exit status: 0 every part passed or was skipped, 1 a part failed or overran its box,
2 it cannot run here (no PyTorch; no CUDA without ``--cpu-dry-run``), in one line.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REPORT, LOG = "gpu_check.json", "gpu_check.log"
OUT_VARIABLES = ("GPU_CHECK_OUT", "OUT")  # the first one set names the output folder
BUDGET_S = 480.0  # the whole check, well inside the ~10 minutes a GPU machine gives it
GRACE_S = 10.0  # past its box by this much, a part's process is killed
WORKER_START_S = 90.0  # a worker that starts no part in this long is killed
MIN_PART_S = 10.0  # a part with less of the budget left is skipped
EXIT_FAILED, EXIT_CANNOT_RUN = 1, 2
WORKER = (sys.executable, "-m", "ivtuning_ros.gpu_check.parts")
# The tests that skip without CUDA (grep -rn 'needs CUDA\|need a GPU' test/), by node id.
CUDA_TESTS = (
    "test/test_deformable_attention.py::test_cuda_graph_replay_matches_eager",
    "test/test_dino_padding.py::test_a_captured_head_reads_the_valid_sizes_buffer",
    "test/test_postprocess.py::test_graph_safe_functions_capture_and_replay",
    "test/test_runtime.py::test_cuda_graph_replay_equals_eager",
    "test/test_gpu_check.py::test_cuda_graphs_are_freed_on_eviction",
)
# Part -> its time box in seconds, in the order the parts run; all but cuda_tests run in
# the worker (`parts`).
BOXES = {"cuda_tests": 90.0, "parity": 60.0, "bench_realtime": 75.0, "bench_swin_l": 90.0,
         "onnxruntime": 60.0, "tensorrt": 120.0}


class Report:
    """The JSON report and the log, both rewritten or appended after every part, so a
    check stopped from outside still leaves what it measured."""

    def __init__(self, out: Path, mode: str, budget: float, parts=BOXES) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.path, self.log_path = out / REPORT, out / LOG
        self.log_path.write_text("")
        self.started = time.monotonic()
        self.data: dict = {"schema": 1, "mode": mode, "status": "running",
                           "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                           "command": [sys.executable, *sys.argv], "budget_s": budget,
                           "seconds": 0.0, "environment": {},
                           "parts": {name: {"status": "pending"} for name in parts},
                           "skipped": {}}

    def log(self, line: str, stream=sys.stdout) -> None:
        """A line to the log file, and to ``stream`` unless it is None."""
        if stream is not None:
            print(line, file=stream, flush=True)
        with self.log_path.open("a") as log:
            log.write(line + "\n")

    def part(self, name: str, entry: dict) -> None:
        self.data["parts"][name] = entry
        if entry["status"] == "skipped":
            self.data["skipped"][name] = entry.get("reason", "")
        for what, why in entry.get("skipped", {}).items():
            self.data["skipped"][f"{name}/{what}"] = why
        self.log(f"{name}: {headline(entry)}")
        self.save()

    def finish(self, status: str, stopped: str = "") -> None:
        self.data["status"] = status
        if stopped:
            self.data["stopped"] = stopped
        self.save()

    def save(self) -> None:
        self.data["seconds"] = round(time.monotonic() - self.started, 1)
        self.path.write_text(json.dumps(self.data, indent=2) + "\n")


def headline(entry: dict) -> str:
    """One line for the log: status, seconds, reason, and the figures that matter."""
    text = f"{entry['status']} in {entry.get('seconds', 0):.1f} s"
    if entry.get("reason"):
        text += f": {entry['reason']}"
    variants = entry.get("variants", {})
    if variants and "total_ms" in next(iter(variants.values())):
        text += " | p50 ms " + ", ".join(
            f"{name} {v['total_ms']['p50']:.1f}" + (f" ({v['speedup_vs_eager_fp32']:.2f}x)"
                                                   if "speedup_vs_eager_fp32" in v else "")
            for name, v in variants.items())
    elif variants:
        text += " | identical detections " + ", ".join(
            f"{name} {v.get('identical_detections', '-')}/{v['scenes']}"
            for name, v in variants.items())
    for name, result in entry.get("results", {}).items():
        if isinstance(result, dict) and "latency_ms" in result:
            text += (f" | {name} p50 {result['latency_ms']['p50']:.1f} ms "
                     f"({result['speedup_vs_torch_fp32']:.2f}x), identical detections "
                     f"{result['parity'].get('identical_detections', '-')}/"
                     f"{result['parity']['scenes']}")
    if "tests" in entry:
        text += " | " + ", ".join(f"{n} {k}" for k, n in Counter(
            t["outcome"] for t in entry["tests"]).items())
    return text


def output_folder(argument: str | None) -> Path:
    """--out, else the first of `OUT_VARIABLES` that is set, else out/."""
    for value in (argument, *(os.environ.get(name) for name in OUT_VARIABLES)):
        if value:
            return Path(value)
    return Path("out")


def child_environment() -> dict[str, str]:
    """The environment of the check's processes: the source tree first on the path."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(REPO) + (os.pathsep + path if path else "")}


# The CUDA tests ---------------------------------------------------------------------------
def cuda_tests(seconds: float, workdir: Path) -> dict:
    """`CUDA_TESTS` under pytest (no plugins: the GPU machine has none), one entry per test."""
    junit = workdir / "cuda_tests.xml"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
               f"--junitxml={junit}", *CUDA_TESTS]
    env = {**child_environment(), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    started = time.monotonic()
    try:
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=seconds)
    except subprocess.TimeoutExpired:
        return {"status": "timed_out", "reason": f"pytest still running after its {seconds:.0f}"
                " s time box: stopped", "seconds": round(time.monotonic() - started, 1)}
    tests = junit_cases(junit) if junit.is_file() else []
    outcomes = Counter(test["outcome"] for test in tests)
    entry = {"seconds": round(time.monotonic() - started, 1), "tests": tests}
    if done.returncode != 0 or outcomes["failed"] or outcomes["error"] or not tests:
        tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
        return {"status": "failed", "reason": f"pytest exited with {done.returncode}",
                "output_tail": tail, **entry}
    if outcomes["skipped"] == len(tests):
        reasons = sorted({test.get("message", "") for test in tests})
        return {"status": "skipped", "reason": f"all {len(tests)} skipped: {'; '.join(reasons)}",
                **entry}
    return {"status": "passed", **entry}


def junit_cases(path: Path) -> list[dict]:
    """pytest's JUnit XML -> [{test (node id), outcome, seconds, message}]."""
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        node = case.get("classname", "").replace(".", "/") + ".py::" + case.get("name", "")
        entry = {"test": node, "outcome": "passed", "seconds": round(float(case.get("time", 0)),
                                                                        2)}
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                entry["outcome"] = {"failure": "failed"}.get(child.tag, child.tag)
                entry["message"] = (child.get("message") or "").splitlines()[0][:300] \
                    if child.get("message") else ""
        cases.append(entry)
    return cases


# The worker's parts -------------------------------------------------------------------------
def supervise(command: list[str], events: Path, output: Path) -> dict[str, dict]:
    """Run a worker (`parts`) and hold each part to the box it announced: a part still
    running ``GRACE_S`` past it, or running when the worker died, ends there, and so does
    the worker. Returns the entry of every part the worker reached."""
    results: dict[str, dict] = {}
    current, box, started, offset = None, WORKER_START_S, time.monotonic(), 0
    with output.open("a") as stream:
        process = subprocess.Popen(command, cwd=REPO, env=child_environment(), stdout=stream,
                                   stderr=subprocess.STDOUT)
    while True:
        code = process.poll()
        offset, new = read_events(events, offset)
        for event in new:
            if "start" in event:
                current, box, started = event["start"], event["seconds"], time.monotonic()
            elif "done" in event:
                results[event["done"]], current = event["result"], None
                started, box = time.monotonic(), WORKER_START_S  # until the next start
        elapsed = time.monotonic() - started
        if code is not None:
            if current is not None:
                results[current] = {"status": "failed", "seconds": round(elapsed, 1),
                                    "reason": f"the worker process exited with {code} while "
                                              "running it (a crash?)", "output_tail": tail(output)}
            return results
        if elapsed > box + GRACE_S:
            process.kill()
            process.wait()
            if current is not None:
                results[current] = {"status": "timed_out", "seconds": round(elapsed, 1),
                                    "reason": f"still running after its {box:.0f} s time box: "
                                              "stopped", "output_tail": tail(output)}
            return results
        time.sleep(0.2)


def read_events(path: Path, offset: int) -> tuple[int, list[dict]]:
    """The complete JSON lines appended to ``path`` since ``offset``."""
    if not path.is_file():
        return offset, []
    with path.open() as stream:
        stream.seek(offset)
        text = stream.read()
    complete = text[:text.rfind("\n") + 1]
    return offset + len(complete), [json.loads(line) for line in complete.splitlines() if line]


def tail(path: Path, lines: int = 15) -> list[str]:
    return path.read_text(errors="replace").strip().splitlines()[-lines:] if path.is_file() \
        else []


def run_worker_parts(names: list[str], boxes: dict[str, float], until: float, dry_run: bool,
                     workdir: Path, report: Report, worker: tuple[str, ...] = WORKER) -> None:
    """Every part in ``names`` through workers, a new worker after a part killed or crashed."""
    pending = list(names)
    for attempt in range(len(names)):
        if not pending:
            return
        events = workdir / f"events-{attempt}.jsonl"
        command = [*worker, "--events", str(events), "--until", str(until),
                   *(["--cpu-dry-run"] if dry_run else []),
                   *(f"{name}={boxes[name]}" for name in pending)]
        results = supervise(command, events, workdir / "worker.log")
        if not results:  # the worker started no part: the first one takes the blame
            results = {pending[0]: {"status": "failed", "seconds": 0.0,
                                    "reason": "the worker process started no part",
                                    "output_tail": tail(workdir / "worker.log")}}
        for name in list(pending):
            if name in results:
                report.part(name, results[name])
                pending.remove(name)


# The check ------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="gpu_check", description="The CUDA path (AMP, CUDA graphs, GPU back-ends) "
        "measured on this machine's PyTorch: one JSON report and a short log.")
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="run every part on the CPU at tiny sizes, CUDA pieces skipped")
    parser.add_argument("--out", help="output folder (default: $GPU_CHECK_OUT, else $OUT, "
                                      "else out/)")
    parser.add_argument("--budget", type=float, default=BUDGET_S,
                        help=f"seconds for the whole check (default {BUDGET_S:.0f})")
    parser.add_argument("--skip", action="append", default=[], choices=list(BOXES),
                        help="leave a part out (repeatable)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = Report(output_folder(args.out), "cpu-dry-run" if args.cpu_dry_run else "gpu",
                    args.budget)
    until = time.time() + args.budget
    try:
        from .facts import environment
    except (ImportError, OSError) as exc:
        return stop(report, f"PyTorch does not import in {sys.executable} ({exc}): run it with "
                            "an interpreter that has PyTorch: PYTHON=/path/to/python3 make "
                            "gpu-check")
    facts = report.data["environment"] = environment(REPO)
    report.save()
    gpus = ", ".join(gpu["name"] for gpu in facts["gpus"]) or "none"
    can_run = facts["cuda_available"] or args.cpu_dry_run
    report.log(f"gpu-check ({report.data['mode']}): torch {facts['torch']} (CUDA "
               f"{facts['torch_cuda']}), Python {facts['python']}, GPU: {gpus}, driver "
               f"{facts['driver']}", stream=sys.stdout if can_run else None)
    if not can_run:
        return stop(report, f"CUDA is not available to PyTorch {facts['torch']} (built for "
                            f"CUDA {facts['torch_cuda']}) here, so nothing was measured: run it "
                            "on a machine with an NVIDIA GPU, or pass --cpu-dry-run "
                            "(GPU_CHECK_ARGS=--cpu-dry-run make gpu-check) to rehearse it")
    with tempfile.TemporaryDirectory(prefix="ivtuning-gpu-check-") as folder:
        workdir = Path(folder)
        names = [name for name in BOXES if name not in args.skip]
        for name in args.skip:
            report.part(name, {"status": "skipped", "reason": "--skip", "seconds": 0.0})
        seconds = min(BOXES["cuda_tests"], until - time.time())
        if "cuda_tests" in names and seconds < MIN_PART_S:
            report.part("cuda_tests", {"status": "skipped", "seconds": 0.0,
                                       "reason": f"{seconds:.0f} s of the budget left"})
        elif "cuda_tests" in names:
            report.part("cuda_tests", cuda_tests(seconds, workdir))
        run_worker_parts([n for n in names if n != "cuda_tests"], BOXES, until,
                         args.cpu_dry_run, workdir, report)
    failed = [name for name, entry in report.data["parts"].items()
              if entry["status"] in ("failed", "timed_out")]
    report.finish("failed" if failed else "passed")
    report.log(f"gpu-check: {'failed: ' + ', '.join(failed) if failed else 'passed'} in "
               f"{report.data['seconds']:.0f} s; report {report.path}, log {report.log_path}")
    return EXIT_FAILED if failed else 0


def stop(report: Report, reason: str) -> int:
    """The one line saying why the check cannot run here; the report records it."""
    report.finish("stopped", reason)
    report.log(f"gpu-check: {reason} (report: {report.path})", stream=sys.stderr)
    return EXIT_CANNOT_RUN
