"""limitstream: streams."""
