"""flashinfer.topk as of 0.7.2, faked: the dispatch predicates keep their signatures, the ops
write an exact top-k on the CPU and record the arguments and FLASHINFER_TOPK_ALGO of each call."""

import os
from types import SimpleNamespace

import torch

CALLS = []
PREDICATES = []
FILTERED_CAPABLE = [True]


def can_use_clusters_topk(algo, device, deterministic, tie_break, dsa_graph_safe):
    PREDICATES.append(("clusters", algo, deterministic, tie_break, dsa_graph_safe))
    return False  # SM100 only


def can_use_cub_topk(algo, input_tensor, tie_break, deterministic, sorted_output=False):
    PREDICATES.append(("can_cub", algo, tie_break, deterministic))
    if sorted_output or deterministic:
        return False
    return algo is None or algo == "cub"


def is_cub_ragged_transform_beneficial(algo, num_rows, d, dtype, tie_break, dsa_graph_safe, clusters_eligible):
    PREDICATES.append(("cub_beneficial", algo, num_rows, d, dsa_graph_safe, clusters_eligible))
    if algo == "cub":
        return True
    if dsa_graph_safe:  # the rules for a captured call (fp32, no tie-break)
        return d >= 32768 if num_rows < 128 else num_rows <= 256 and d >= 65536
    return (num_rows <= 32 and d >= 32768) or (num_rows <= 64 and d >= 65536)


def _select(input, output_indices, lengths, top_k):
    width = input.shape[1]
    n = lengths.long()
    x = torch.where(torch.arange(width) < n[:, None], input, float("-inf"))
    picks = torch.topk(x, min(top_k, width), dim=1).indices
    out = torch.full_like(output_indices, -1)
    out[:, : picks.shape[1]] = picks.int()
    slots = torch.arange(top_k)
    short = torch.where(slots < n[:, None], slots, -1)
    output_indices.copy_(torch.where((n <= top_k)[:, None], short, out))


def _radix(input, output_indices, offsets, lengths, row_states_buffer, top_k, deterministic, tie_break,
           dsa_graph_safe=False, row_starts=None):
    CALLS.append(dict(op="native", algo=os.environ.get("FLASHINFER_TOPK_ALGO"), deterministic=deterministic,
                      tie_break=tie_break, dsa_graph_safe=dsa_graph_safe, output=output_indices,
                      row_states=row_states_buffer, offsets=offsets, lengths=lengths))
    _select(input, output_indices, lengths, top_k)


def _cub(input, output_indices, offsets, lengths, workspace_buffer, top_k, tie_break, row_starts=None):
    CALLS.append(dict(op="cub", algo=os.environ.get("FLASHINFER_TOPK_ALGO"), tie_break=tie_break,
                      output=output_indices, workspace=workspace_buffer))
    _select(input, output_indices, lengths, top_k)


def _workspace_size(input, lengths, top_k, tie_break, with_row_starts):
    return 4096


def get_topk_module():
    return SimpleNamespace(radix_topk_ragged_transform=_radix, cub_topk_ragged_transform=_cub,
                           cub_topk_ragged_transform_workspace_size=_workspace_size,
                           can_implement_filtered_topk=lambda: FILTERED_CAPABLE[0])
