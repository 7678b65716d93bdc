"""Replay a rosbag2 into mine_jepa_node (simulation-in-the-loop / regression runs).

    ros2 launch mine_jepa_ros replay.launch.py bag:=survey_bag model_path:=model.safetensors

Plays the bag with `ros2 bag play` (its image topic remapped to the node's input) and starts the
node through mine_jepa.launch.py; the node's detections appear on /mine_jepa_node/detections.
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

from launch import LaunchDescription

LAUNCH_ARGUMENTS = ("bag", "rate", "bag_topic", "model_path", "input_mode")


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("mine_jepa_ros")
    detector = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, "launch", "mine_jepa.launch.py")),
        launch_arguments={
            "model_path": LaunchConfiguration("model_path"),
            "input_mode": LaunchConfiguration("input_mode"),
            "input_topic": "/mine_jepa/replay/image",
        }.items(),
    )
    play = ExecuteProcess(
        cmd=["ros2", "bag", "play", LaunchConfiguration("bag"), "--rate", LaunchConfiguration("rate"),
             "--remap", [LaunchConfiguration("bag_topic"), ":=/mine_jepa/replay/image"]],
        output="screen",
    )
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="rosbag2 to play (e.g. from `mine-jepa simulate`)."),
        DeclareLaunchArgument("rate", default_value="1.0", description="Playback rate."),
        DeclareLaunchArgument("bag_topic", default_value="/sonar/sidescan/image", description="Image topic in the bag."),
        DeclareLaunchArgument("model_path", description="Checkpoint (.safetensors)."),
        DeclareLaunchArgument("input_mode", default_value="frames", description="frames or pings."),
        detector,
        play,
    ])
