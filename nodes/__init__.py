"""Thin ComfyUI adapters over merge_core."""
