"""The fixture tooling's CPU transducer loss equals NeMo's reference losses (values and gradients)."""

from __future__ import annotations

import subprocess

from conftest import ROOT, stage_python

# NeMo's TDTLossPytorch calls .cuda() on its buffers; on this CPU-only machine those calls are made
# no-ops for the duration of the check, the arithmetic is NeMo's own.
CHECK = r"""
import json, sys, torch
sys.path.insert(0, sys.argv[1])
torch.Tensor.cuda = lambda self, *a, **k: self
from nemo.collections.asr.losses.rnnt_pytorch import RNNTLossPytorch, TDTLossPytorch
from tdt_loss import tdt_loss
torch.manual_seed(0)
out = {}
for name, durs, sigma in (("tdt", [0, 1, 2, 3, 4], 0.05), ("tdt_no0", [1, 2, 3], 0.0), ("rnnt", [], 0.0)):
    B, T, U, V = 3, 11, 5, 7
    logits = torch.randn(B, T, U + 1, V + 1 + len(durs), dtype=torch.float32, requires_grad=True)
    labels = torch.randint(0, V, (B, U))
    act, lab = torch.tensor([11, 8, 6]), torch.tensor([5, 2, 4])
    if durs:
        ref = TDTLossPytorch(blank=V, durations=durs, reduction="none", sigma=sigma)(
            acts=logits, labels=labels, act_lens=act, label_lens=lab)
    else:
        ref = RNNTLossPytorch(blank=V, reduction="none")(acts=logits, labels=labels, act_lens=act, label_lens=lab)
    mine = tdt_loss(logits, labels, act, lab, durs, V, sigma=sigma, reduction="none")
    g_ref, = torch.autograd.grad(ref.sum(), logits)
    g_mine, = torch.autograd.grad(mine.sum(), logits)
    out[name] = {"ref": ref.tolist(), "mine": mine.tolist(), "grad_diff": float((g_ref - g_mine).abs().max()),
                 "grad_norm": float(g_ref.abs().max())}
print(json.dumps(out))
"""


def test_cpu_transducer_loss_equals_nemo_reference():
    proc = subprocess.run([str(stage_python("nemo")), "-c", CHECK, str(ROOT / "tests" / "fixtures")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(res) == {"tdt", "tdt_no0", "rnnt"}
    for name, r in res.items():
        assert all(x > 1.0 for x in r["ref"]), (name, r)  # a real negative log-likelihood, not zeros
        for a, b in zip(r["ref"], r["mine"]):
            assert abs(a - b) <= 1e-4 * max(1.0, abs(a)), (name, r)
        assert r["grad_norm"] > 1e-3 and r["grad_diff"] <= 1e-5, (name, r)
