"""An SSGD Flower app: edit task.py (model and data); the rest is the wiring."""
