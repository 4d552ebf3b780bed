"""The light name lists (layerbench.names) agree with the registries in torch-importing modules."""
from layerbench import names
from layerbench.engine.attention import BACKENDS
from layerbench.engine.linear_kernels import KERNELS
from layerbench.models.loading import DTYPES


def test_attention_backend_names():
    assert names.ATTENTION_BACKENDS == tuple(BACKENDS)


def test_linear_kernel_names():
    # "module" (the nn.Linear itself) is the engine's own test hook, not a CLI choice
    assert names.LINEAR_KERNELS == ("auto", "tuned", *(k for k in KERNELS if k != "module"))


def test_dtype_names():
    assert names.DTYPES == ("auto", *DTYPES)
