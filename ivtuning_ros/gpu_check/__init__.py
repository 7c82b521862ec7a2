"""`make gpu-check`: the CUDA path (AMP, CUDA graphs, the GPU back-ends) measured on
whatever PyTorch a GPU machine has, with no network, no venv and no ROS.

`check` runs it: environment facts, then each part in turn, each in a time box, and
writes one JSON report and a short log (README "GPU check"). The parts run in a worker
process (`parts`) that the check restarts after a part that overran its box or crashed,
so one hung or broken part costs only its own results. ``--cpu-dry-run`` runs the same
parts on the CPU at tiny sizes, the CUDA-only pieces reported as skipped.
"""
