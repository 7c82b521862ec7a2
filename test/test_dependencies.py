"""Every third-party import is declared, once in package.xml and once in setup.py, and nothing
else is (issue 21: timm was imported when the node starts but missing from package.xml, so
`rosdep install` left it out and the node died with a traceback).

Required: everything a module imports when it is imported: a module-level import anywhere is
needed by some command (each `ivtuning` command imports its own modules), and the node's
(entry -> node -> model, runtime) are among them. They go into setup.py's
install_requires and into package.xml: a rosdep key where rosdistro has a usable one, else
named in a package.xml comment and installed with pip (README "Install on a ROS 2
distribution"). Optional: imported inside a function under ``try/except ImportError`` or
through `runtime.backends.require`, in a setup.py extra, and a missing one is a one-line
error naming the pip package and the extra. ROS 2 packages go into package.xml only.
"""
from __future__ import annotations

import ast
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIRST_PARTY = {"ivtuning_ros", "test"}

# Import name (longest dotted prefix wins) -> (pip distribution, rosdep key; None: no usable
# key in rosdistro's rosdep/python.yaml, so pip only, named in a package.xml comment).
REQUIRED = {
    "PIL": ("pillow", "python3-pil"),
    "cv2": ("opencv-python-headless", "python3-opencv"),
    "huggingface_hub": ("huggingface_hub", None),
    "matplotlib": ("matplotlib", "python3-matplotlib"),
    "mcap": ("mcap", None),
    "numpy": ("numpy", "python3-numpy"),
    "pycocotools": ("pycocotools", None),
    "safetensors": ("safetensors", None),
    "scipy": ("scipy", "python3-scipy"),
    "supervision": ("supervision", None),
    "timm": ("timm", "python3-timm-pip"),
    "torch": ("torch", None),  # python3-torch is the distribution's build: see package.xml
    "torch.utils.tensorboard": ("tensorboard", "python3-tensorboard-pip"),
    "torchvision": ("torchvision", "python3-torchvision-pip"),
    "tqdm": ("tqdm", "python3-tqdm"),
    "trackers": ("trackers", None),
    "yaml": ("pyyaml", "python3-yaml"),
}
# Import name -> the pip distributions that provide it, each in a setup.py extra.
OPTIONAL = {
    "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "open_clip": ("open_clip_torch",),
    "openvino": ("openvino",),
    "py_sod_metrics": ("pysodmetrics",),
    "tensorrt": ("tensorrt",),
}
# ROS 2 packages (package.xml only; on a machine without a distribution the Makefile installs
# ROS 2's PyPI wheels). Those the package imports must be exec_depends.
ROS = {"ament_index_python", "builtin_interfaces", "diagnostic_msgs", "geometry_msgs", "launch",
       "launch_pytest", "launch_ros", "launch_testing", "launch_testing_ros", "lifecycle_msgs",
       "rcl_interfaces", "rclpy", "rosidl_runtime_py", "sensor_msgs", "std_msgs", "vision_msgs"}
# Imported by test/ only -> (pip distribution in the `test` extra, rosdep key or None).
TEST_ONLY = {
    "mcap_ros2": ("mcap-ros2-support", "mcap-ros2-support"),
    "motmetrics": ("motmetrics", None),
    "pytest": ("pytest", "python3-pytest"),
    "sewar": ("sewar", None),
    "skimage": ("scikit-image", "python3-skimage"),
}
# In the `test` extra, run as commands rather than imported.
TOOLS = {"ruff": "make lint", "colcon-common-extensions": "test/test_packaging.py"}
# ROS 2 command-line tools the launch tests (test/launch) run: package.xml test_depends.
ROS_TEST_TOOLS = {"ros2launch", "ros2lifecycle", "ros2param"}
IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError"}


@dataclass(frozen=True)
class Import:
    name: str         # dotted module name
    where: str        # path:line
    at_import: bool   # runs when its module is imported (not inside a function)
    guarded: bool     # under try/except ImportError, or through backends.require()


def canonical(distribution: str) -> str:
    """A pip distribution name without version and extras, normalised (PEP 503)."""
    name = re.match(r"[A-Za-z0-9._-]+", distribution.strip()).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(n, ast.Name) and n.id in IMPORT_ERRORS for n in names)


def _imports(node: ast.AST, where: str, calls: tuple[str, ...], at_import: bool = True,
             guarded: bool = False):
    """The absolute imports under ``node``: statements, and calls of the functions named in
    ``calls`` (``require("x", ...)``, ``import_module("x")``) with a literal name."""
    line = f"{where}:{getattr(node, 'lineno', 0)}"
    if isinstance(node, ast.Import):
        yield from (Import(a.name, line, at_import, guarded) for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.level == 0:
        yield Import(node.module, line, at_import, guarded)
    elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
          and isinstance(node.args[0].value, str)):
        function = getattr(node.func, "id", getattr(node.func, "attr", ""))
        if function in calls:
            yield Import(node.args[0].value, line, at_import, guarded or function == "require")
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        at_import = False
    if isinstance(node, ast.Try) and any(_catches_import_error(h) for h in node.handlers):
        for child in node.body:
            yield from _imports(child, where, calls, at_import, True)
        for child in node.handlers + node.orelse + node.finalbody:
            yield from _imports(child, where, calls, at_import, guarded)
        return
    for child in ast.iter_child_nodes(node):
        yield from _imports(child, where, calls, at_import, guarded)


def third_party_imports(*folders: str, calls=("require", "import_module")) -> list[Import]:
    """Imports of the ``*.py`` files under ``folders`` that are neither stdlib nor ours."""
    found = []
    for folder in folders:
        for path in sorted((REPO / folder).rglob("*.py")):
            where = str(path.relative_to(REPO))
            for item in _imports(ast.parse(path.read_text(), where), where, calls):
                top = item.name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in FIRST_PARTY:
                    found.append(item)
    return found


def table_key(name: str, *tables: dict) -> str | None:
    """The longest dotted prefix of ``name`` that a table has (``torch.utils.tensorboard``
    before ``torch``), or the top-level name if it is in ROS."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if any(prefix in table for table in tables):
            return prefix
    return parts[0] if parts[0] in ROS else None


def package_xml() -> tuple[dict[str, set[str]], str]:
    """({exec, test: dependency keys}, the text of its comments)."""
    text = (REPO / "package.xml").read_text()
    root = ET.fromstring(text)
    depend = {e.text.strip() for e in root.iter("depend")}
    keys = {"exec": {e.text.strip() for e in root.iter("exec_depend")} | depend,
            "test": {e.text.strip() for e in root.iter("test_depend")} | depend}
    return keys, " ".join(re.findall(r"<!--(.*?)-->", text, re.DOTALL))


def setup_py() -> tuple[set[str], dict[str, set[str]]]:
    """(install_requires, extras_require) of setup.py, canonical names."""
    tree = ast.parse((REPO / "setup.py").read_text())
    call = next(n for n in ast.walk(tree)
                if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    values = {k.arg: ast.literal_eval(k.value) for k in call.keywords
              if k.arg in ("install_requires", "extras_require")}
    return ({canonical(d) for d in values["install_requires"]},
            {extra: {canonical(d) for d in dists}
             for extra, dists in values["extras_require"].items()})


def by_key(imports: list[Import], *tables: dict) -> dict[str | None, list[Import]]:
    grouped: dict[str | None, list[Import]] = {}
    for item in imports:
        grouped.setdefault(table_key(item.name, *tables), []).append(item)
    return grouped


PACKAGE = by_key(third_party_imports("ivtuning_ros", "launch"), REQUIRED, OPTIONAL)


def test_every_import_is_in_the_table():
    unknown = [f"{item.name} ({item.where})" for item in PACKAGE.get(None, [])]
    assert not unknown, (
        f"imports not classified: {', '.join(unknown)}; add each to REQUIRED (and declare it "
        f"in package.xml and setup.py install_requires), OPTIONAL (a setup.py extra) or ROS "
        f"(package.xml) in {Path(__file__).name}")
    stale = sorted((set(REQUIRED) | set(OPTIONAL)) - set(PACKAGE))
    assert not stale, f"nothing imports {stale} any more: drop them from the tables"


def test_required_imports_are_declared_in_package_xml_and_setup_py():
    keys, comments = package_xml()
    install_requires, _ = setup_py()
    missing = []
    for name, items in sorted(PACKAGE.items(), key=lambda kv: str(kv[0])):
        if name in OPTIONAL or name is None:
            continue
        first = items[0].where
        if name in ROS:
            if name not in keys["exec"]:
                missing.append(f"package.xml: <exec_depend>{name}</exec_depend> ({first})")
            continue
        distribution, key = REQUIRED[name]
        if canonical(distribution) not in install_requires:
            missing.append(f"setup.py install_requires: '{distribution}' ({name}, {first})")
        if key and key not in keys["exec"]:
            missing.append(f"package.xml: <exec_depend>{key}</exec_depend> ({name}, {first})")
        if not key and not re.search(rf"\b{re.escape(distribution)}\b", comments):
            missing.append(f"package.xml: a comment naming '{distribution}' as pip only "
                           f"({name}, {first})")
    assert not missing, "undeclared dependencies:\n  " + "\n  ".join(missing)


def test_nothing_is_declared_that_is_not_imported():
    keys, _ = package_xml()
    install_requires, extras = setup_py()
    required = [REQUIRED[name] for name in PACKAGE if name in REQUIRED]
    expected_keys = {key for _, key in required if key} | {n for n in PACKAGE if n in ROS}
    assert keys["exec"] - expected_keys == set(), "package.xml declares what nothing imports"
    assert install_requires - {canonical(d) for d, _ in required} == set(), \
        "setup.py install_requires has what nothing imports"
    optional = {canonical(d) for name in PACKAGE if name in OPTIONAL for d in OPTIONAL[name]}
    for extra, distributions in extras.items():
        if extra != "test":
            assert distributions <= optional, f"extra '{extra}': nothing imports " \
                f"{sorted(distributions - optional)}"


def test_optional_imports_are_lazy_guarded_and_in_an_extra():
    _, extras = setup_py()
    in_extras = set().union(*(d for extra, d in extras.items() if extra != "test"))
    for name in set(PACKAGE) & set(OPTIONAL):
        for item in PACKAGE[name]:
            assert not item.at_import, f"{item.where}: optional '{name}' imported with its " \
                "module; import it inside the function that needs it"
            assert item.guarded, f"{item.where}: import of optional '{name}' without " \
                "try/except ImportError or backends.require(): a missing package is a traceback"
        assert set(map(canonical, OPTIONAL[name])) <= in_extras, f"'{name}' is in no extra"


def _missing_package_errors():
    """Optional import -> a call that needs it."""
    from ivtuning_ros.evaluation.sod_metrics import SODEvaluator
    from ivtuning_ros.image_fusion.quality import ClipScorer
    from ivtuning_ros.runtime.backends import require
    from ivtuning_ros.runtime.backends.onnx_export import read_metadata

    return {"onnx": lambda: read_metadata("absent.onnx"),
            "onnxruntime": lambda: require("onnxruntime", "onnxruntime"),
            "open_clip": lambda: ClipScorer("absent.pt"),
            "openvino": lambda: require("openvino", "openvino"),
            "py_sod_metrics": SODEvaluator,
            "tensorrt": lambda: require("tensorrt", "tensorrt")}


@pytest.mark.parametrize("name", sorted(OPTIONAL))
def test_missing_optional_package_is_one_line_naming_pip_and_the_extra(name, monkeypatch):
    calls = _missing_package_errors()
    assert set(calls) == set(OPTIONAL), "give every optional import a call in this test"
    monkeypatch.setitem(sys.modules, name, None)  # import fails as if not installed
    with pytest.raises(Exception) as raised:
        calls[name]()
    message = str(raised.value)
    assert not isinstance(raised.value, ImportError), message
    assert "\n" not in message and f"pip install '{OPTIONAL[name][0]}'" in message, message
    extra = re.search(r"pip install 'ivtuning_ros\[([\w-]+)\]'", message)
    _, extras = setup_py()
    assert extra and canonical(OPTIONAL[name][0]) in extras.get(extra.group(1), ()), message


def test_test_imports_are_in_the_test_extra_and_test_depends():
    keys, comments = package_xml()
    install_requires, extras = setup_py()
    imports = third_party_imports("test", calls=("importorskip", "import_module"))
    tests = by_key([i for i in imports if table_key(i.name) not in ROS],
                   REQUIRED, OPTIONAL, TEST_ONLY)
    unknown = [f"{i.name} ({i.where})" for i in tests.get(None, [])]
    assert not unknown, f"test imports not classified: {unknown}; add them to TEST_ONLY " \
        "and setup.py's `test` extra (package.xml test_depend where rosdep has a key)"
    available = install_requires | extras["test"]
    for name in tests:
        distributions = OPTIONAL.get(name) or (REQUIRED.get(name) or TEST_ONLY[name])[:1]
        assert {canonical(d) for d in distributions} & available, \
            f"'{name}' ({tests[name][0].where}): not in install_requires or the `test` extra"
    imported = {canonical(d) for n in tests for d in OPTIONAL.get(n, ())} | {
        canonical(TEST_ONLY[n][0]) for n in tests if n in TEST_ONLY}
    stale = extras["test"] - imported - set(TOOLS)
    optional = {canonical(d) for dists in OPTIONAL.values() for d in dists}
    assert stale <= optional, f"the `test` extra has what no test uses: {sorted(stale)}"
    test_keys = {TEST_ONLY[n][1] for n in tests if n in TEST_ONLY and TEST_ONLY[n][1]}
    ros_packages = {table_key(i.name) for i in imports if table_key(i.name) in ROS}
    test_keys |= (ros_packages - keys["exec"]) | ROS_TEST_TOOLS
    assert keys["test"] == test_keys, "package.xml test_depends != the tests' rosdep keys"


def test_readme_install_section_lists_what_package_xml_declares():
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Install on a ROS 2 distribution", 1)[-1].split("\n##", 1)[0]
    assert section != readme, "README has no '### Install on a ROS 2 distribution' section"
    keys, _ = package_xml()
    _, extras = setup_py()
    pip_only = [d for name, (d, key) in REQUIRED.items() if name in PACKAGE and not key]
    absent = [f"`{k}`" for k in sorted(keys["exec"]) + pip_only if f"`{k}`" not in section]
    absent += [f"`[{e}]`" for e in extras if e != "test" and f"[{e}]" not in section]
    assert not absent, f"README's install section does not list {', '.join(absent)}"
