"""The names of the registries that live in torch-importing modules, importable without torch or transformers,
so benchmark.py lists them as choices and refuses a bad one at once. tests/unit/test_names.py checks that each
registry (engine.attention.BACKENDS, engine.linear_kernels, models.loading.DTYPES) answers to exactly these names.
Registries in light modules (evaluation.datasets.DATASETS, surgery.methods.PRUNE_METHODS, decoding.STRATEGIES,
surgery.config.STAND_INS) are used directly."""

LINEAR_KERNELS = ("auto", "tuned", "torch", "few_row_mm")  # the engine also has "module", for its own tests
ATTENTION_BACKENDS = ("auto", "flash", "efficient", "cudnn", "math")
DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda")
CUDA_GRAPHS = ("auto", "on", "off", "static")
EXACT = ("auto", "on", "off")
COMPILE = ("auto", "on", "off")
CHAT_TEMPLATE = ("auto", "on", "off")
EXIT_ADAPTERS = ("none", "linear", "trained")
TRAINED_EXIT_ADAPTER_FILE = "exit_adapter.safetensors"  # beside a checkpoint train.py wrote with --trainable exit_adapter
