"""mine_jepa_ros: side-scan sonar mine detection with Mine-JEPA ViTs, for ROS 2."""

__version__ = "0.1.0"
