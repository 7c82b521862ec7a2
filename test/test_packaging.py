"""A non-editable install carries the whole package: every module of the source tree, both
console scripts and the data files (issue 21: a folder without ``__init__.py`` was left out
by a plain `colcon build` and by `pip install .`; the editable install of `make test` hides
that, since it imports the source tree).

The package is built from a copy of the source tree (no stale ``build/``) with a plain
`colcon build` (setup.cfg puts the scripts under ``lib/ivtuning_ros``) and as a pip wheel.
Modules are imported from the colcon install in a process that cannot see the source tree.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from importlib.util import find_spec
from pathlib import Path

import pytest

from .process import CollectedProcess

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "ivtuning_ros"
NOT_COPIED = (".venv", ".git", "build", "install", "log", "out", "__pycache__", "*.egg-info",
              ".pytest_cache", ".ruff_cache")
SCRIPTS = ("ivtuning", "perception_node")
SITE = f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"


def source_modules() -> list[str]:
    """Dotted names of every module in the source tree."""
    names = []
    for path in sorted((REPO / PACKAGE).rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def data_files() -> list[str]:
    """Paths under the install prefix that setup.py's data_files must put there."""
    share = f"share/{PACKAGE}"
    files = [f"share/ament_index/resource_index/packages/{PACKAGE}", f"{share}/package.xml",
             f"{share}/launch/perception.launch.py", f"{share}/config/perception.yaml",
             f"{share}/config/perception.rviz"]
    models = [f"{share}/models/{p.name}" for pattern in ("*.yaml", "*.pth")
              for p in sorted((REPO / "models").glob(pattern))]
    assert models, "models/ has no *.yaml or *.pth"
    return files + models


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, (f"{' '.join(map(str, command))} failed "
                                    f"({result.returncode}):\n{result.stdout}{result.stderr}")
    return result


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """The source tree as a clone would have it."""
    copy = tmp_path_factory.mktemp("src") / PACKAGE
    shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(*NOT_COPIED))
    return copy


@pytest.fixture(scope="module")
def colcon_prefix(source, tmp_path_factory) -> Path:
    """The package's install prefix after a plain `colcon build` (no --symlink-install)."""
    if find_spec("colcon_core") is None:
        pytest.skip("colcon is not installed (setup.py's `test` extra has it)")
    workspace = tmp_path_factory.mktemp("workspace")
    env = {k: v for k, v in os.environ.items() if k != "COLCON_DEFAULTS_FILE"}
    env["COLCON_HOME"] = str(workspace / "colcon_home")  # no user defaults (symlink-install)
    run([sys.executable, "-m", "colcon", "--log-base", str(workspace / "log"), "build",
         "--paths", str(source), "--build-base", str(workspace / "build"),
         "--install-base", str(workspace / "install"), "--event-handlers", "console_direct-"],
        cwd=workspace, env=env)
    return workspace / "install" / PACKAGE


# Run from a folder outside the repository: the install's site-packages first, the source tree
# off sys.path and the editable install's finder removed.
IMPORT_ALL = """
import importlib, json, sys
site, repo, names = sys.argv[1], sys.argv[2], sys.argv[3:]
sys.path[:] = [site] + [p for p in sys.path if p not in ("", ".", repo)]
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in f.__module__]
failed, outside = {}, {}
for name in names:
    try:
        module = importlib.import_module(name)
    except Exception as exc:
        failed[name] = f"{type(exc).__name__}: {exc}"
        continue
    if not module.__file__.startswith(site):
        outside[name] = module.__file__
from ivtuning_ros.ros.params import package_dir
print(json.dumps({"failed": failed, "outside": outside, "models": str(package_dir("models"))}))
"""


def installed_environment(prefix: Path) -> dict[str, str]:
    """The environment after sourcing the workspace (the package's prefix on the ament index
    path and its site-packages on PYTHONPATH)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(
        [str(prefix)] + [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)
                         if p])
    env["PYTHONPATH"] = str(prefix / SITE)
    return env


def test_colcon_install_imports_every_module_of_the_source_tree(colcon_prefix, tmp_path):
    names = source_modules()
    site = colcon_prefix / SITE
    missing = [n for n in names if not (site / n.replace(".", "/")).with_suffix(".py").is_file()
               and not (site / n.replace(".", "/") / "__init__.py").is_file()]
    assert not missing, f"modules missing from the colcon install: {missing}"
    env = installed_environment(colcon_prefix)
    del env["PYTHONPATH"]
    result = run([sys.executable, "-c", IMPORT_ALL, str(site), str(REPO), *names], cwd=tmp_path,
                 env=env)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert not report["failed"], f"modules that do not import from the install: {report['failed']}"
    assert not report["outside"], f"modules imported from outside the install: {report['outside']}"
    assert report["models"] == str(colcon_prefix / "share" / PACKAGE / "models")


def test_colcon_install_has_the_scripts_and_data_files(colcon_prefix, tmp_path):
    for script in SCRIPTS:
        path = colcon_prefix / "lib" / PACKAGE / script  # where `ros2 run` and launch look
        assert path.is_file() and os.access(path, os.X_OK), f"no executable {path}"
    absent = [f for f in data_files() if not (colcon_prefix / f).is_file()]
    assert not absent, f"data files missing from the colcon install: {absent}"
    result = run([str(colcon_prefix / "lib" / PACKAGE / "ivtuning"), "--help"], cwd=tmp_path,
                 env=installed_environment(colcon_prefix))
    assert "usage: ivtuning" in result.stdout


def test_pip_wheel_has_every_module_the_scripts_and_data_files(source, tmp_path):
    """`pip install .` installs the wheel pip builds: check what that wheel holds."""
    env = {k: v for k, v in os.environ.items() if k != "PIP_FIND_LINKS"}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(source)], cwd=tmp_path, env=env)
    wheel, = tmp_path.glob(f"{PACKAGE}-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        files = set(archive.namelist())
        entry_points, = [n for n in files if n.endswith(".dist-info/entry_points.txt")]
        scripts = archive.read(entry_points).decode()
    modules = {n[:-3].replace("/", ".").removesuffix(".__init__") for n in files
               if n.startswith(f"{PACKAGE}/") and n.endswith(".py")}
    missing = sorted(set(source_modules()) - modules)
    assert not missing, f"modules missing from the wheel: {missing}"
    data = wheel.name.split("-py")[0] + ".data/data/"
    absent = [f for f in data_files() if data + f not in files]
    assert not absent, f"data files missing from the wheel: {absent}"
    for script in SCRIPTS:
        assert f"{script} = " in scripts, f"no console script {script} in the wheel"


def test_pip_installed_node_starts_and_stops(source, tmp_path):
    """`pip install .` (non-editable, into a prefix of its own, not on the ament index): the
    installed `perception_node` finds its share files, starts and exits 0 on Ctrl-C."""
    env = {k: v for k, v in os.environ.items() if k != "PIP_FIND_LINKS"}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    prefix = tmp_path / "prefix"
    # --ignore-installed: without it pip first uninstalls the venv's own (editable) install.
    run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q",
         "--ignore-installed", "--prefix", str(prefix), str(source)], cwd=tmp_path, env=env)
    env = installed_environment(prefix)
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(  # the venv's ROS packages only
        p for p in env["AMENT_PREFIX_PATH"].split(os.pathsep) if p != str(prefix))
    node = CollectedProcess([str(prefix / "bin" / "perception_node"), "--ros-args",
                             "-p", "model_config:=ivt_tiny_test.yaml", "-p", "device:=cpu",
                             "-p", "allow_untrained:=true", "-r", "__node:=pip_installed"],
                            env={**env, "ROS_DOMAIN_ID": str(os.getpid() % 200 + 23)})
    try:
        node.wait_for_line("engine ready")
        code, _ = node.stop()
    finally:
        node.kill()
    assert code == 0, node.output
    assert "Traceback" not in node.output, node.output

