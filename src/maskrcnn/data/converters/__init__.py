"""Labels from the tools people label with, as COCO instance JSON that `maskrcnn train` reads
as it is (`maskrcnn convert`): instance label images (`label_images`: CellProfiler, StarDist,
Cellpose, napari), Ultralytics YOLO segmentation labels (`yolo`) and LabelMe files
(`labelme`). Polygons stay polygons (COCO's own polygon segmentation); label images become
exact RLE. `coco_file` builds and writes the JSON, split into training and validation images
when asked."""
