"""ament_python package (colcon build) that also installs with plain pip.

``pip install .`` is the vehicle runtime (no torch: exported ONNX models on ONNX Runtime);
``pip install -e .[train,export,xtf,peer,test]`` is the development install (``make`` uses it).

One importable package, ``mine_jepa_ros``; nothing else is installed at top level. The training
recipes (``training/*.yaml``) go to ``share/mine_jepa_ros/training`` beside the launch and config files.
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "mine_jepa_ros"

# The vehicle install (`pip install .`): the node, replay, simulate, the bag tools, import-xtf's bag
# side and contacts, running exported .onnx models on ONNX Runtime. No torch.
RUNTIME = [
    "numpy>=1.23",
    "opencv-python-headless>=4.8",  # image decoding, drawing, PNGs
    "rosbags>=0.10",  # rosbag2 read/write and message definitions without ROS
    "safetensors>=0.4",  # checkpoints (never pickle)
    "onnxruntime>=1.23",  # the vehicle's inference backend (onnxruntime-gpu instead for CUDA / TensorRT)
    "pyproj>=3.4",  # WGS84 geodesy: georeferenced contacts
    "tqdm>=4.60",  # progress bars
]
TORCH = [
    "torch==2.14.1",  # the torch backend (.safetensors checkpoints) and training
    "torchvision==0.29.1",  # timm needs it (pinned to the torch build it matches); the peer's detector is its FCOS
    "timm>=1.0",  # the ViT backbones
]
PLOTS = ["matplotlib>=3.7"]  # metric plots: training, replay --report, contacts --png

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["interfaces/*/msg/*.msg", "interfaces/vision_msgs/*.txt", "interfaces/vision_msgs/*.xml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/training", [*glob("training/*.yaml"), "training/README.md"]),
    ],
    python_requires=">=3.10",
    install_requires=RUNTIME,
    extras_require={
        # The torch backend: node and replay on .safetensors checkpoints (bf16 autocast, CUDA).
        "torch": TORCH,
        "plots": PLOTS,
        # Pretraining, probing, calibration, experiments (recipes are YAML).
        "train": [*TORCH, *PLOTS, "PyYAML>=6.0"],
        # `mine-jepa import-xtf` and `extract --xtf`: raw XTF side-scan recordings.
        "xtf": ["pyxtf>=1.4"],
        # mine-jepa mosaic's GeoTIFF (its wheel bundles GDAL)
        "gis": ["rasterio>=1.3"],
        # `mine-jepa export [--int8]`: ONNX graph (onnx + onnxscript for torch's exporter), checked with onnxruntime.
        "export": [*TORCH, "onnx>=1.16", "onnxscript>=0.5"],
        # `mine-jepa peer` and experiment's peer row: torchvision's FCOS trained from scratch (BSD-3-Clause).
        "peer": [*TORCH, *PLOTS],
        # mcap and mcap-ros2-support: independent readers of `mine-jepa review`'s MCAP in the tests;
        # playwright drives Debian's Chromium (`make browser`) in the report's browser test
        "test": ["pytest>=7", "hypothesis>=6", "mypy>=1.8", "mcap>=1.1", "mcap-ros2-support>=0.5", "playwright>=1.40"],
    },
    # rclpy: the system's on a ROS 2 machine, else the pinned ROS 2 wheels that
    # `python -m mine_jepa_ros.interfaces.build --distro kilted|jazzy` installs (see README).
    zip_safe=True,
    maintainer="mine_jepa_ros maintainers",
    maintainer_email="maintainers@mine-jepa-ros.invalid",
    description="Side-scan sonar mine detection with Mine-JEPA ViTs for ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "mine-jepa = mine_jepa_ros.cli:main",
            "mine_jepa_node = mine_jepa_ros.ros.node:main",
        ],
    },
)
