"""Tensor-parallel plan for DeepSpeed AutoTP, and the check that it really sharded the model.

GPT-NeoX splits like Megatron: the two projections that read the residual stream are split
by output columns, the two that write back into it by input rows, so each layer needs one
all-reduce after attention and one after the MLP::

    attention.query_key_value  column  (hidden -> 3*hidden/tp: whole heads per rank, since the
                                        fused output is laid out [heads, 3, head_dim])
    attention.dense            row     (hidden/tp -> hidden, all-reduce)
    mlp.dense_h_to_4h          column  (hidden -> intermediate/tp)
    mlp.dense_4h_to_h          row     (intermediate/tp -> hidden, all-reduce)

Embeddings and the output head stay replicated (REFERENCE §5).
"""

from __future__ import annotations

import re

from torch import nn

COLUMN = ("attention.query_key_value", "mlp.dense_h_to_4h")
ROW = ("attention.dense", "mlp.dense_4h_to_h")


def _patterns(names: tuple[str, ...]) -> list[str]:
    return [".*\\." + re.escape(name) + "\\.weight$" for name in names]


def autotp_config(tp_size: int) -> dict:
    """The ``tensor_parallel`` section of the DeepSpeed config."""
    return {
        "autotp_size": tp_size,
        "partition_config": {
            "use_default_specs": False,
            "layer_specs": [
                {"patterns": _patterns(COLUMN), "partition_type": "column"},
                {"patterns": _patterns(ROW), "partition_type": "row"},
            ],
        },
    }


def tp_kind(name: str) -> str:
    """'column', 'row' or 'replicated': how tensor parallelism splits this parameter."""
    module = name.rsplit(".", 1)[0]
    if module.endswith(COLUMN):
        return "column"
    if module.endswith(ROW) and name.endswith(".weight"):
        return "row"
    return "replicated"  # includes the row layers' biases, added once after the all-reduce


def check_sharded(model: nn.Module, tp_size: int, hidden: int, intermediate: int) -> None:
    """Fail loudly unless every TP weight has its split dimension divided by ``tp_size``.

    DeepSpeed before 0.19.3 could silently ignore custom patterns and leave layers whole
    (REFERENCE §5); training would then run, just without tensor parallelism.
    """
    expected = {
        "attention.query_key_value.weight": (3 * hidden // tp_size, hidden),
        "mlp.dense_h_to_4h.weight": (intermediate // tp_size, hidden),
        "attention.dense.weight": (hidden, hidden // tp_size),
        "mlp.dense_4h_to_h.weight": (hidden, intermediate // tp_size),
    }
    seen = 0
    for name, param in model.named_parameters():
        for suffix, shape in expected.items():
            if name.endswith(suffix):
                # ZeRO-3 keeps the real shape in ds_shape; the tensor itself is a placeholder.
                actual = tuple(getattr(param, "ds_shape", param.shape))
                if actual != shape:
                    raise RuntimeError(
                        f"tensor parallelism did not shard {name}: shape {actual}, expected {shape} for "
                        f"tensor_parallel={tp_size}; check the DeepSpeed version (>= 0.19.3) and the AutoTP "
                        "partition patterns in train/parallel.py"
                    )
                seen += 1
    if seen == 0:
        raise RuntimeError("tensor parallelism: no attention/MLP weights found to check")
