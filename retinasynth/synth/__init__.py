"""Rendering masks into fundus images, phantom data and the synthetic dataset writer."""
