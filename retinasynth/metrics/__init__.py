"""Image similarity (two protocols) and segmentation scores."""
