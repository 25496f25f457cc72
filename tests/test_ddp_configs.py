"""DDP cannot crash on a config that validation accepts: unused parameters are declared.

Loss weights of 0 leave parts of the model without a gradient, and DDP's first
backward fails on such parameters unless it looks for them.
:func:`vipa.model.unused_parameters` names those configs; the first test checks
it against the gradients of every switch and pair of switches, the second
trains each such config under a 2-process gloo DDP.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import free_port

from vipa.config import ModelConfig, apply_overrides
from vipa.config.validate import validate_model
from vipa.data.synthetic import generate_synthetic
from vipa.errors import ConfigError
from vipa.model import VipaLoss, build_model, unused_parameters

TINY = ["encoder.name=tiny", "encoder.preset=micro", "image_size=32", "veg.k=4",
        "decoder.dim=16"]
# Switches that change which parts of the model take part in the loss.
SWITCHES = [
    ["loss.contrastive=0"], ["loss.aux=0"], ["loss.bce=0"], ["loss.dice=0"],
    ["decoder.kv=language"], ["decoder.kv=visual"],
    ["decoder.kv=both", "decoder.expression_dropout=0.5"], ["decoder.deep_supervision=true"],
    ["decoder.coords=false"], ["veg.retrieval=off"], ["veg.refine=off"], ["veg.cues=local"],
    ["veg.cues=global"], ["veg.context_layers=1"], ["veg.fallback=true"], ["veg.mix=0.5"],
    ["veg.detach_expression=true"], ["veg.mask=none"], ["fusion.name=none"],
    ["fusion.name=late"], ["decoder.prior=true"], ["loss.relevance_bce=0.5"],
    ["veg.select=calibrated"], ["decoder.kv=both", "decoder.hide_expression=true"],
    ["veg.straight_through=successive"], ["veg.word_pool=attention"],
]
# Tried alone, not in pairs: the presence head (generalized sets) with the switches that
# decide the VEG's gradient, and the prior at the VEG's resolution.
ALONE = [
    ["decoder.prior=true", "decoder.prior_resolution=veg"],
    ["presence=relevance"], ["presence=head"], ["presence=head", "loss.presence=0"],
    ["presence=cells"], ["veg.fine_level=8"],
    ["categories=3", "loss.category=0.5"], ["categories=3"],
    ["presence=relevance", "loss.presence=0"],
    ["presence=relevance", "loss.contrastive=0", "decoder.kv=language"],
    ["presence=head", "loss.contrastive=0", "veg.retrieval=off"],
    ["presence=relevance", "loss.presence=0", "loss.contrastive=0", "decoder.kv=language"],
]
UNUSED = [
    ["loss.contrastive=0", "decoder.kv=language"],
    ["loss.contrastive=0", "veg.retrieval=off"],
    ["loss.contrastive=0", "veg.detach_expression=true"],
    ["decoder.deep_supervision=true", "loss.aux=0"],
    ["categories=3", "loss.category=0"],
]


def params_without_gradient(overrides: list[str]) -> list[str] | None:
    """Parameters one training step leaves without a gradient; None for a refused config."""
    config = apply_overrides(ModelConfig(), [*TINY, *overrides])
    try:
        validate_model(config)
    except ConfigError:
        return None
    torch.manual_seed(0)
    model = build_model(config).train()
    model.encoder.tokenizer.fit(["the red circle", "the square on the left"])
    ids, mask = model.tokenize(["the red circle", "the square on the left"])
    masks = (torch.rand(2, 1, 32, 32) > 0.5).float()
    labels = torch.randint(0, config.categories + 1, (2, 32, 32))
    output = model(torch.rand(2, 3, 32, 32), ids, mask)
    VipaLoss(config.loss)(output, masks, labels).total.backward()
    return [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]


def test_unused_parameters_names_every_config_that_leaves_parameters_out():
    wrong = []
    for combo in [*([s] for s in [*SWITCHES, *ALONE]),
                  *itertools.combinations(SWITCHES, 2)]:
        overrides = [o for switch in combo for o in switch]
        missing = params_without_gradient(overrides)
        if missing is None:
            continue
        declared = unused_parameters(apply_overrides(ModelConfig(), [*TINY, *overrides]))
        if bool(missing) != bool(declared):
            wrong.append((overrides, missing[:3], declared))
    assert not wrong, wrong


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("synth"), seed=2, n_train=16, n_val=4,
                              n_test=2, image_size=64)


@pytest.mark.parametrize("overrides", UNUSED, ids=["+".join(u) for u in UNUSED])
def test_configs_that_leave_parameters_unused_train_under_ddp(overrides, data_root, tmp_path):
    # The cpu preset trains the relevance map with loss.relevance_bce, which gives the VEG a
    # gradient without the contrastive loss; without it these configs leave parameters out.
    base = [*TINY, "loss.relevance_bce=0"]
    sets = [arg for o in [*base, *overrides, "data.max_val_samples=4", "train.val_every=100"]
            for arg in ("--set", o)]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "--master-port", str(free_port()), "-m", "vipa_cli", "-v", "train",
               "--data-root", str(data_root), "--batch-size", "2", "--max-steps", "2",
               "--device", "cpu", "--output", str(tmp_path / "run"), "--no-progress", *sets]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "DDP looks for unused parameters" in output
    assert "all 2 ranks hold the same weights" in output
