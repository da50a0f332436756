"""limitstream: features."""
