"""The explorer: static HTML + JavaScript pages (`assets/`) over a pure-Python data layer
(`atlas.py`), served by the gateway at `/ui` and written as a folder by `neuron-atlas report`."""
