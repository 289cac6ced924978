"""A small exact CPU top-k for fixture plugins (full-width rows; ragged rows via a -inf mask)."""

import torch

from topkbench import Runner


class FixtureRunner(Runner):
    def __init__(self, logits, lengths, k):
        rows, width = logits.shape
        self.logits, self.lengths, self.k = logits, lengths, k
        self.output = torch.empty(rows, k, dtype=torch.int32)

    def run(self):
        width = self.logits.shape[1]
        n = torch.full((self.logits.shape[0],), width) if self.lengths is None else self.lengths.long()
        x = torch.where(torch.arange(width) < n[:, None], self.logits, float("-inf"))
        picks = torch.topk(x, min(self.k, width), dim=1).indices
        slots = torch.arange(self.k)
        self.output.fill_(-1)
        self.output[:, : picks.shape[1]] = picks.int()
        short = (n <= self.k)[:, None]
        self.output.copy_(torch.where(short, torch.where(slots < n[:, None], slots, -1), self.output).int())

    def result(self):
        return self.output
