"""The input-type vocabulary: how side-scan pings travel, spelled once for every tool.

* ``image``: ``sensor_msgs/Image`` (waterfall frames, or one ping per height-1 image);
  ``compressed``: ``sensor_msgs/CompressedImage`` (the node subscribes to one type per topic;
  offline readers take both as ``image``).
* Driver messages, one ping each (:data:`DRIVER_INPUT_TYPES`): ``raw_sonar_image``
  (``marine_acoustic_msgs/RawSonarImage``, port and starboard on two topics, paired by stamp) and
  ``smarc_sidescan`` (``smarc_msgs/Sidescan``, both channels in one message).
"""

from __future__ import annotations

DRIVER_INPUT_TYPES = ("raw_sonar_image", "smarc_sidescan")
WRITTEN_INPUT_TYPES = ("image", *DRIVER_INPUT_TYPES)
"""What ``simulate`` writes and what a recording's pings can be."""
RECORDING_INPUT_TYPES = ("auto", *WRITTEN_INPUT_TYPES)
"""What the offline tools read (``auto``: images where the bag has any, else a driver's topics)."""
NODE_INPUT_TYPES = ("image", "compressed", *DRIVER_INPUT_TYPES)
"""What the node subscribes to."""
RECORDING_MODES = ("auto", "frames", "pings")
"""How a recording's images are read (``auto``: height-1 images are pings)."""
