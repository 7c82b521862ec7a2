"""Add a trained head to a full checkpoint, leaving every other tensor bit-identical.

    python tools/add_head.py BASE.pth TRAINED.pth HEAD OUT.pth

e.g. `make demo-sod-weights`: the demo model's SOD head, trained alone on the frozen demo
model, added to models/ivt_demo.pth (see `ivtuning_ros.model.checkpoint.add_head`).
"""
import sys

from ivtuning_ros.model.checkpoint import add_head

if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    add_head(*sys.argv[1:])
    print(f"wrote {sys.argv[4]}: {sys.argv[1]} with the '{sys.argv[3]}' head of {sys.argv[2]}")
