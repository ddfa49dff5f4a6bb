"""Text to a checked Spec, without torch: YAML with positions, the section models, blocks, shapes, cost, check."""
