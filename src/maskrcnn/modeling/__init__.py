"""The parts of Mask R-CNN, each in the file named after it."""
