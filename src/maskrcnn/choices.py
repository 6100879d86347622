"""The values settings take, shared by the Python API, the config checks and the command line.

Kept free of torch so that the command line checks what the user typed before paying for
importing torch (seconds on a cold machine): a wrong value is answered at once.
"""

# The one default of every user-facing prediction: model.predict, `maskrcnn predict` and
# the graph `maskrcnn export` writes.
PREDICT_SCORE_THRESHOLD = 0.5

# Numeric precision of a run (precision.py): float32, bfloat16 or float16 autocast, or the
# fastest of them on this hardware.
PRECISIONS = ("fp32", "bf16", "fp16", "auto")

# Intensity normalization (data/intensity.py); the per-image ones read each image's own values.
INTENSITIES = ("auto", "range", "minmax", "percentile")
PER_IMAGE = ("minmax", "percentile")
