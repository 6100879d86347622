"""Prediction on files (`predict`: overlays, COCO results JSON, images.json) and the manifest
of what a command wrote in its output folder (`manifest`)."""
