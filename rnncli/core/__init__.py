"""The foundation: errors and exit codes, the one settings object (TrainConfig), files
(output paths, locks, the atomic swap), JSON from outside, what a terminal may be sent, the
optional installs, writing systems, ``--device`` syntax and what the engines share about
scores. Imports no other floor of rnncli. Light: standard library and NumPy.
"""
