"""The command line, on top of every other floor: the Click group and commands, their shared
options, and the one place errors are rendered (``main.py``).
"""
