"""Suite-wide settings: never reach a model hub, keep torch to one thread per test process, and run the
Triton kernels in Triton's interpreter (on CPU tensors; the flag only takes effect if it is set before
anything imports triton, and peft / sedsft.train do)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRITON_INTERPRET", "1")
