"""Memory and time estimates before training, and the probe that calibrates them.

`memory`, `timing` and `recommend` are pure arithmetic over model facts read
from config.json (no torch); `probe` runs real steps in a subprocess.
"""
