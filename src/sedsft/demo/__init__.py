"""The CPU demo: the paper's SFT -> GRPO -> evaluation comparison in minutes, with a tiny model.

``world`` is the synthetic math world (sums with several solution strategies), ``tokenizer`` the
locally built demo tokenizer, ``base_model`` stage 0 (a tiny Llama pre-trained on the diverse corpus).
Import the submodules directly; this package imports nothing heavy.
"""
