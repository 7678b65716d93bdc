"""The ROS 2 adapter: parameters and the worker (ROS-free) and the node (the only rclpy code)."""
