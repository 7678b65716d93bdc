"""ament_python package (colcon build) that also installs with plain pip (pip install -e .[train,test])."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "mine_jepa_ros"

RUNTIME = [
    "numpy>=1.23",
    "opencv-python-headless>=4.8",
    "rosbags>=0.10",
    "safetensors>=0.4",
    "torch==2.14.1",
    "torchvision==0.29.1",
    "timm>=1.0",
    "tqdm>=4.60",
    "PyYAML>=6.0",
    "matplotlib>=3.7",
]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*", "training", "training.*"]),
    package_data={PACKAGE: ["interfaces/vision_msgs/msg/*.msg", "interfaces/vision_msgs/*.txt", "interfaces/vision_msgs/*.xml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    python_requires=">=3.10",
    install_requires=RUNTIME,
    extras_require={
        "train": ["pyxtf>=1.4"],
        "test": ["pytest>=7", "hypothesis>=6", "mypy>=1.8"],
        # `mine-jepa export`: ONNX graph (onnx + onnxscript for torch's exporter), checked with onnxruntime.
        "export": ["onnx>=1.16", "onnxscript>=0.5", "onnxruntime>=1.18"],
        # ROS 2 Kilted wheels from PyPI for machines without a ROS install (see README).
        "ros": ["ros-rclpy[fastrtps]", "ros-sensor-msgs", "ros-std-msgs", "ros-geometry-msgs", "ros-diagnostic-msgs"],
    },
    zip_safe=True,
    maintainer="mine_jepa_ros maintainers",
    maintainer_email="maintainers@mine-jepa-ros.invalid",
    description="Side-scan sonar mine detection with Mine-JEPA ViTs for ROS 2",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "mine-jepa = mine_jepa_ros.cli:main",
            "mine_jepa_node = mine_jepa_ros.node:main",
        ],
    },
)
