"""Product-side development kit: the ComfyUI server driver, seeded random-weight checkpoint writers and workflow helpers, shared by the demo, the benchmarks and the tests."""
