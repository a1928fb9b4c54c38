"""What the tests share: independent oracles (`calc_oracles`, `lora_oracles`, `expected_blocks`), fixtures and
sources (`sd1_sources`, `load_paths`), assertions on saved files and tensors (`arch_checks`), and the pack
loaded as ComfyUI loads it (`pack`)."""
