"""Research-Factory: rubric drafting and distillation by rejection sampling (pure parts)."""
