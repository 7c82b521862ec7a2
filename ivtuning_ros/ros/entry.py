"""The ``perception_node`` entry point (as ``ros2 run ivtuning_ros perception_node``).

SIGINT/SIGTERM handlers go in before anything heavy is imported, so a signal at any
phase (importing torch, loading the model, warm-up, spinning) ends the process within a
moment, with exit code 0 and no traceback. rclpy's own handlers are not used: they only
shut the context down, which leaves a start-up in progress to fail later with a traceback.
Every error is one line on stderr.
"""
from __future__ import annotations

import os
import re
import signal
import sys
import threading
from pathlib import Path

from .transport import TransportChoice, choose_transport, kernel_rmem_max

# launch_ros writes the parameters given as a dict in a launch file (this package's launch
# arguments) to a temporary file named so.
LAUNCH_PARAMS_PREFIX = "launch_params_"
BOOT_NODE = "_perception_node_boot"  # hidden (leading underscore), gone once the node exists
EXIT_JOIN_S = 0.5  # at exit, the frame in flight gets this long; its results are not needed


class _StopRequested(BaseException):
    """SIGINT/SIGTERM: unwinds whatever the main thread runs (model loading included)."""


# Python ignores an exception raised while it runs a finaliser or a garbage-collector
# callback ("Exception ignored in ..."), so a signal landing there would be lost: the flag
# keeps it, and each phase boundary and the spin loop check it.
_signalled = threading.Event()


def _stop_requested(signum, frame) -> None:
    _signalled.set()
    raise _StopRequested


def _stop_if_signalled() -> None:
    if _signalled.is_set():
        raise _StopRequested


def main(args: list[str] | None = None) -> None:
    """Exit codes: 0 after SIGINT/SIGTERM at any phase; 2 for unusable parameters (a bad
    parameters file, a bad value); 1 when configure or activate fails with ``autostart``."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stop_requested)
    try:
        code = run(args)
    except _StopRequested:
        code = 0
    # The inference worker may still be inside a torch call (it got EXIT_JOIN_S): a normal
    # interpreter exit would tear C++ state down under it and abort. Everything is shut
    # down and flushed by now, so leave without the interpreter's finalisation.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run(args: list[str] | None = None) -> int:
    """Start, spin until shut down, clean up; returns the exit code."""
    argv = sys.argv if args is None else args
    problem = _params_file_problem(argv)  # before the heavy imports: a bad file fails at once
    if problem:
        return _fail(problem, 2)
    _stop_if_signalled()
    from .dds_memory import use_dynamic_history_memory

    use_dynamic_history_memory()  # before the first participant: Fast DDS reads it once
    import rclpy
    from rclpy.exceptions import ParameterException
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    context = rclpy.Context()
    node = None
    # Before the first node: it creates the process's DDS participant, with this transport.
    transport = choose_transport(os.environ, kernel_rmem_max())
    os.environ.update(transport.environment)
    try:
        try:
            rclpy.init(args=args, context=context,
                       signal_handler_options=SignalHandlerOptions.NO)
        except Exception as exc:
            return _fail(f"cannot start: {_first_line(exc)} (check the --ros-args and the "
                         "parameters file's YAML)", 2)
        # The DDS participant comes with a context's first node: made now, discovery of the
        # cameras runs during the seconds of imports and model loading below, instead of
        # after them (up to 3 s to the first result here).
        boot = rclpy.create_node(BOOT_NODE, context=context)
        from .node import PerceptionNode, SettingsError

        _stop_if_signalled()

        try:
            node = PerceptionNode(context=context)
        except (SettingsError, ParameterException) as exc:
            message = _first_line(exc)
            return _fail(f"{message}; fix it in {_where_set(message, argv)}", 2)
        finally:
            boot.destroy_node()
        _stop_if_signalled()
        _log_transport(node, transport)
        if node.settings.autostart and not _start(node):
            return 1
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        while context.ok():
            _stop_if_signalled()
            executor.spin_once(timeout_sec=0.1)
        return 0
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)  # a second signal must not cut the clean-up
        if node is not None:
            node._stop(join_timeout=EXIT_JOIN_S)
            node.destroy_node()
        context.try_shutdown()


def _params_file_problem(args: list[str]) -> str | None:
    """Why a ``--params-file`` in ``args`` cannot be read, checked before rcl reads it (rcl's
    own message names its C sources rather than the problem)."""
    import yaml

    files = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "--params-file"]
    for name in files:
        try:
            data = yaml.safe_load(Path(name).read_text())
        except OSError as exc:
            return f"cannot read the parameters file {name}: {exc.strerror}"
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            return (f"the parameters file {name} is not valid YAML{where}: "
                    f"{getattr(exc, 'problem', None) or exc}; fix the file")
        if not isinstance(data, dict) or not all(
                isinstance(v, dict) and isinstance(v.get("ros__parameters"), dict)
                for v in data.values()):
            return (f"the parameters file {name} must map node names (or /**) to a "
                    "'ros__parameters:' mapping; see config/perception.yaml")
    return None


def _where_set(message: str, args: list[str]) -> str:
    """Where the parameter(s) named in ``message`` got their value: the last of the
    ``--params-file`` files and ``-p`` overrides that sets it, as rcl applies them."""
    from .params import SPECS

    names = [name for name in SPECS if re.search(rf"\b{name}\b", message)]
    origins = []
    for name in names:
        origin = "the parameters file (config/perception.yaml holds the defaults)"
        for flag, value in zip(args, args[1:], strict=False):
            if flag == "-p" and value.startswith(f"{name}:="):
                origin = f"the command line (-p {name}:=...)"
            elif flag == "--params-file" and _file_sets(value, name):
                origin = (f"the launch argument {name}:=..." if
                          Path(value).name.startswith(LAUNCH_PARAMS_PREFIX)
                          else f"the parameters file {value}")
        if origin not in origins:
            origins.append(origin)
    return " and ".join(origins) or "the parameters"


def _file_sets(path: str, name: str) -> bool:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and any(
        isinstance(v, dict) and name in (v.get("ros__parameters") or {}) for v in data.values())


def _log_transport(node, transport: TransportChoice) -> None:
    # One call site per severity: rclpy refuses two severities at one site.
    if transport.warn:
        node.get_logger().warning(transport.message)
    elif transport.message:
        node.get_logger().info(transport.message)


def _start(node) -> bool:
    """configure + activate; False (the reason already logged) when either fails."""
    node.trigger_configure()
    if node._state != "inactive":
        return False
    node.trigger_activate()
    return node._state == "active"


def _fail(message: str, code: int) -> int:
    print(f"perception_node: {message}", file=sys.stderr)
    return code


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


if __name__ == "__main__":
    main()
