"""limitstream: agents."""
