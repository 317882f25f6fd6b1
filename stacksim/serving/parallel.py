"""Checks of a deployment's parallelism: tensor, pipeline, attention data and expert parallel.

The cost of each lives in the step kernel (``kernels/cost.py``) and its parameters
(``serving/costmodel.py``); this module says which combinations stacksim can model, in words a
user can act on.
"""

from __future__ import annotations

from stacksim.catalog import Accelerator, ModelArch


def parallelism_problem(model: ModelArch, acc: Accelerator, tp: int, pp: int, dp: int, ep: int,
                        speculative: bool) -> tuple[str, str] | None:
    """(field, message) for a combination that cannot be modelled, or None."""
    if dp == 1 and ep == 1:
        return None
    if not model.is_moe or model.expert_params <= 0:
        field = "data_parallel" if dp > 1 else "expert_parallel"
        return field, (f"{model.id} is a dense model: attention data parallelism and expert parallelism apply to "
                       f"mixture-of-experts models; serve a dense model on more GPUs with more replicas")
    if ep != tp * dp:
        return "expert_parallel", (f"must equal tensor_parallel x data_parallel ({tp} x {dp} = {tp * dp}): the experts "
                                   f"are spread over every GPU of a stage (vLLM: 'the EP size is TP x DP'); got {ep}")
    if model.num_experts % ep:
        valid = ", ".join(str(d) for d in range(2, model.num_experts + 1) if model.num_experts % d == 0 and d <= 256)
        return "expert_parallel", (f"{model.id}'s {model.num_experts} routed experts do not split evenly over {ep} GPUs; "
                                   f"valid: {valid}")
    if ep > acc.scaleup_domain_gpus:
        return "expert_parallel", (f"{ep} GPUs exceed {acc.id}'s scale-up domain of {acc.scaleup_domain_gpus}: "
                                   f"all-to-alls across nodes (RDMA) are not modelled; use at most "
                                   f"{acc.scaleup_domain_gpus} GPUs per stage")
    if speculative:
        return "engine", "speculative decoding together with data_parallel / expert_parallel is not modelled"
    return None
