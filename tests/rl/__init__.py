"""RL-stage tests (GRPO reward, prompts, filter, verl export, configs)."""
