"""Scoring: COCO AP of detections against a split's cleaned annotations (`coco`), detections as
COCO results JSON (`results`), keypoint OKS sigmas (`keypoints`), and `maskrcnn eval`'s work
(`run`). A run's final evaluation and `maskrcnn eval` use the same code and write the same
reports."""
