"""Procedural clothed humans on Anny: samples, renders, occupancy, videos with ground truth.

NOTE TO THE HELPER WRITING THIS PACKAGE: read /tmp/preamble.md now (project context, the
geometry API you must use, the stage contract and the team's git rules: commit only your own
files, never `git add -A`/stash/reset). Delete this note when you replace this docstring.
"""
