"""Messages, images, bags and recordings: everything that reads or writes them (rank 1, no torch; see docs/design.md)."""
