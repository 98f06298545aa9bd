"""``privet demo``: the end-to-end job on embedded defaults, one stage per capability."""

from privet.demo import desensitization, dp_statistics, dp_training, federated, foundation, serving
from privet.demo.runner import DemoResult, run_demo
from privet.demo.stage import Check, DemoContext, Stage, StageReport

STAGES: list[Stage] = [
    foundation.STAGE,
    dp_statistics.STAGE,
    desensitization.STAGE,
    dp_training.STAGE,
    federated.STAGE,
    serving.STAGE,
]

__all__ = ["STAGES", "Check", "DemoContext", "DemoResult", "Stage", "StageReport", "run_demo"]
