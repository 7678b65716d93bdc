"""Launch mine_jepa_node with config/mine_jepa.yaml; the key parameters are launch arguments.

    ros2 launch mine_jepa_ros mine_jepa.launch.py model_path:=/path/to/model.onnx
    ros2 launch mine_jepa_ros mine_jepa.launch.py model_path:=/path/to/model.safetensors device:=cuda
    ros2 launch mine_jepa_ros mine_jepa.launch.py params_file:=my.yaml input_mode:=pings

Every launch argument's default is the value in the package's config/mine_jepa.yaml (read at launch
time, so the two cannot drift); an argument given a different value overrides params_file.
"""

from __future__ import annotations

import os

import yaml
from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchContext, LaunchDescription

# The parameters exposed as launch arguments (each is also in config/mine_jepa.yaml).
LAUNCH_ARGUMENTS = (
    "autostart",
    "model_path",
    "backend",
    "providers",
    "device",
    "input_topic",
    "input_type",
    "input_mode",
    "input_reliability",
    "batch_size",
    "flip_views",
    "rescoring",
    "localisation",
    "thresholds",
    "publish_overlay",
    "queue_depth",
    "port_topic",
    "starboard_topic",
    "fix_topic",
    "heading_topic",
    "heading_type",
    "altitude_topic",
    "navigation_reliability",
    "layback_m",
    "contacts_file",
)


def package_defaults() -> tuple[str, dict]:
    path = os.path.join(get_package_share_directory("mine_jepa_ros"), "config", "mine_jepa.yaml")
    with open(path, encoding="utf-8") as f:
        return path, yaml.safe_load(f)["mine_jepa_node"]["ros__parameters"]


def _as_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _node(context: LaunchContext, defaults: dict) -> list[Node]:
    overrides = {}
    for name in LAUNCH_ARGUMENTS:
        text = LaunchConfiguration(name).perform(context)
        if text != _as_text(defaults[name]):
            parsed = yaml.safe_load(text) if text else ""
            # Keep the YAML's type: a path or topic that looks like a number stays a string.
            overrides[name] = parsed if type(parsed) is type(defaults[name]) or isinstance(defaults[name], list) else text
    return [
        Node(
            package="mine_jepa_ros",
            executable="mine_jepa_node",
            name="mine_jepa_node",
            namespace=LaunchConfiguration("namespace"),
            parameters=[LaunchConfiguration("params_file"), overrides],
            output="screen",
            emulate_tty=True,
        )
    ]


def generate_launch_description() -> LaunchDescription:
    params_path, defaults = package_defaults()
    arguments = [
        DeclareLaunchArgument("params_file", default_value=params_path, description="Node parameters (YAML)."),
        DeclareLaunchArgument("namespace", default_value="", description="Node namespace."),
    ]
    arguments += [
        DeclareLaunchArgument(name, default_value=_as_text(defaults[name]), description=f"Overrides {name} of params_file.")
        for name in LAUNCH_ARGUMENTS
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_node, args=[defaults])])
