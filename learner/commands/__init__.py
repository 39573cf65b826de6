"""The user commands: verify, embed, enroll, identify, evaluate, calibrate, export, average.

Each is ``python -m learner.<command>`` (a thin module in :mod:`learner` that runs the
``main`` here), shares :mod:`learner.commands.cli` (the --checkpoint argument, one-line
errors, exit code 2) and loads its model through :mod:`learner.inference.speaker_model`.
"""
