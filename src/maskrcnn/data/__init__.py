"""Images and datasets."""
