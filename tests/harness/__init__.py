"""The lm-evaluation-harness side of the KoBEST agreement test and of ``benchmarks/eval.py``.

    from harness import make_tiny_model, run_harness     # with tests/ on sys.path
    model_dir = make_tiny_model("/tmp/tiny")
    run = run_harness(model_dir, "copa", 5, "../shared/corpus/kobest_v1", limit=40)
    run.examples[0]   # {"idx", "gold", "loglikelihoods", "prediction", "context"}
    run.metrics       # {"acc", "f1"} (+ "acc_norm" for hellaswag), as lm-eval computed them (f1: macro)

lm-eval runs offline on local files: its shipped ``kobest_*`` tasks are included by path and only
their dataset is replaced (see ``lm_eval_kobest``).
"""

from .lm_eval_kobest import TASKS, HarnessRun, read_split, run_harness, write_local_tasks
from .tiny_model import make_tiny_model

__all__ = ["TASKS", "HarnessRun", "make_tiny_model", "read_split", "run_harness", "write_local_tasks"]
