"""The enterprise controls: features declare permissions, policy decides, one Verdict type.

    permissions.py   per-group feature permissions of each host (upload, room creation, ...)
"""
