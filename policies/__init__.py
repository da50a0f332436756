"""limitstream: policies."""
