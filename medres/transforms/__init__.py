"""Preprocessing built from the model card (2D x-ray, 3D volume)."""
