"""Dataset layouts, image/mask/FOV I/O, preprocessing and paired transforms."""

from retinasynth.data.dataset import DataConfig, Dataset, Sample, detect_layout, index_dataset, load_dataset
from retinasynth.data.inspect import format_report, inspect_dataset
from retinasynth.data.io import derive_fov, read_image, read_mask
from retinasynth.data.layouts import LAYOUTS

__all__ = ["DataConfig", "Dataset", "LAYOUTS", "Sample", "derive_fov", "detect_layout", "format_report",
           "index_dataset", "inspect_dataset", "load_dataset", "read_image", "read_mask"]
