"""`vipa train` / `vipa eval`: learning, checkpoints, exact resume, DDP, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from vipa.checkpoint import load_model, read_checkpoint
from vipa.config import resolve_config
from vipa.data.synthetic import generate_synthetic
from vipa.metrics import RISMetrics
from vipa.model import build_model
from vipa.training import train
from vipa.training.optim import build_optimizer
from vipa_cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("synth"), seed=1, n_train=40, n_val=12,
                              n_test=6, image_size=64)


def tiny_args(root: Path, output: Path, steps: int) -> list[str]:
    """CLI arguments for a seconds-long run of the tiny encoder."""
    return ["--encoder", "tiny", "--preset", "micro", "--fusion", "early", "--data-root",
            str(root), "--image-size", "32", "--batch-size", "4", "--max-steps", str(steps),
            "--device", "cpu", "--output", str(output), "--no-progress",
            "--set", "veg.k=4", "--set", "decoder.dim=16", "--set", "train.warmup_steps=0",
            "--set", "train.log_every=1", "--set", "train.checkpoint_every=2",
            "--set", "data.max_val_samples=6", "--set", "train.val_every=100"]


def tiny_config(root: Path, output: Path, steps: int, *overrides: str):
    args = tiny_args(root, output, steps)
    options = {"encoder": "tiny", "preset": "micro", "fusion": "early", "data_root": root,
               "image_size": 32, "batch_size": 4, "max_steps": steps, "device": "cpu",
               "output": output}
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    return resolve_config("cpu", options, [*sets, *overrides])


def weights_of(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path).tensors


def test_training_improves_the_loss_and_writes_the_run(data_root, tmp_path):
    result = train(tiny_config(data_root, tmp_path / "run", 24, "train.lr=3e-3"),
                   progress=False)
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().split("\n")
               if x]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 24
    assert np.mean(losses[-6:]) < np.mean(losses[:6])
    assert [p.name for p in result.run_dir.glob("last.state-*.pt")] == [
        f"last.state-{result.step}.pt"]  # one resume state, the one of the weights
    for name in ("best.safetensors", "last.safetensors", "config.yaml",
                 "curves.png"):
        assert (result.run_dir / name).is_file(), name
    assert "oIoU" in result.best_metrics
    assert not list(result.run_dir.glob(".*.tmp"))  # atomic writes leave no temp files
    model, checkpoint = load_model(result.best)
    assert checkpoint.model_config.encoder.name == "tiny"
    assert checkpoint.step == result.step


def _start(args: list[str], env_extra: dict[str, str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "vipa_cli", "train", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_checkpoint(process: subprocess.Popen, path: Path, timeout: float = 120) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.is_file():
            try:
                return read_checkpoint(path).step
            except Exception:  # being replaced right now; look again
                pass
        assert process.poll() is None, process.communicate()[0]
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


def test_kill_9_then_resume_gives_the_same_weights(data_root, tmp_path):
    steps = 8
    reference = train(tiny_config(data_root, tmp_path / "whole", steps), progress=False)

    crashed = tmp_path / "crashed"
    process = _start(tiny_args(data_root, crashed, steps))
    saved_step = _wait_for_checkpoint(process, crashed / "last.safetensors")
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert saved_step < steps

    result = runner.invoke(app, ["train", "--resume", "--output", str(crashed), "--no-progress"])
    assert result.exit_code == 0, result.output
    resumed, whole = weights_of(crashed / "last.safetensors"), weights_of(reference.last)
    assert resumed.keys() == whole.keys()
    for key in whole:
        torch.testing.assert_close(resumed[key], whole[key], rtol=0, atol=1e-6, msg=key)


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(data_root, tmp_path):
    run = tmp_path / "term"
    process = _start(tiny_args(data_root, run, 400))
    _wait_for_checkpoint(process, run / "last.safetensors")
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 143, output
    assert "stopped by SIGTERM" in output and "Traceback" not in output
    [state_file] = run.glob("last.state-*.pt")
    state = torch.load(state_file, weights_only=True)
    assert read_checkpoint(run / "last.safetensors").step == state["step"] > 0


def test_eval_metrics_match_the_saved_prediction_pngs(data_root, tmp_path):
    run = train(tiny_config(data_root, tmp_path / "run", 6), progress=False)
    predictions, out = tmp_path / "preds", tmp_path / "metrics.json"
    result = runner.invoke(app, ["eval", "--checkpoint", str(run.best), "--data-root",
                                 str(data_root), "--split", "val", "--save-predictions",
                                 str(predictions), "--output", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    reported = json.loads(out.read_text())

    from vipa.data.refer import load_refs

    index = load_refs(data_root, "synthetic")
    samples = index.samples("val")
    assert reported["samples"] == len(samples) == len(list(predictions.glob("*.png")))
    direct, per_kind = RISMetrics(), {}
    for sample in samples:
        png = np.asarray(Image.open(predictions / f"{sample.sent_id}.png")) > 127
        gt = index.mask(sample.ann_id).astype(bool)
        assert png.shape == gt.shape  # written at the original image size
        direct.update([png], [gt])
        per_kind.setdefault(sample.kind, RISMetrics()).update([png], [gt])
    expected = direct.compute()
    for key in ("mIoU", "oIoU", "P@0.5", "P@0.9"):
        assert reported[key] == pytest.approx(expected[key], abs=1e-9), key
    # The synthetic set names each sentence's kind: the breakdown is in the JSON and the table.
    assert set(reported["kinds"]) == set(per_kind) == {"attribute", "position", "relation"}
    for kind, metrics in per_kind.items():
        assert reported["kinds"][kind]["samples"] == metrics.compute()["samples"]
        assert reported["kinds"][kind]["mIoU"] == pytest.approx(metrics.compute()["mIoU"])
    assert all(kind in result.output for kind in per_kind)


def test_two_process_ddp_on_cpu(data_root, tmp_path):
    run = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "--master-port", "29517", "-m", "vipa_cli", "-v", "train",
               *tiny_args(data_root, run, 4)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    # train() compares the ranks' parameter sums and fails the run when they differ.
    assert "all 2 ranks hold the same weights" in output, output
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]  # rank 0 writes once
    assert read_checkpoint(run / "last.safetensors").step == 4


RANKS_DISAGREE = """
import sys
from pathlib import Path
import torch, torch.distributed as dist
from vipa.errors import VipaError
from vipa.training.distributed import assert_ranks_agree, init_distributed
info = init_distributed("cpu")
model = torch.nn.Linear(3, 1)
torch.nn.init.constant_(model.weight, 1.0 + info.rank)  # rank 1 holds other weights
try:
    assert_ranks_agree(model, info, torch.device("cpu"))
    outcome = "agreed"
except VipaError as error:
    outcome = f"refused: {error}"
Path(sys.argv[1], f"rank{info.rank}.txt").write_text(outcome)
dist.destroy_process_group()
"""


def test_ranks_with_different_weights_are_refused(tmp_path):
    script = tmp_path / "disagree.py"
    script.write_text(RANKS_DISAGREE)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
                           "2", "--master-port", "29518", str(script), str(tmp_path)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    for rank in (0, 1):
        outcome = (tmp_path / f"rank{rank}.txt").read_text()
        assert outcome.startswith("refused: DDP ranks ended with different weights"), outcome


@pytest.mark.parametrize("args, code, needle", [
    (["--data", "refcoco", "--data-root", "/no/such/dir"], 1, "does not exist"),
    (["--encoder", "nope"], 2, "unknown encoder 'nope'"),
    (["--set", "veg.kk=3"], 2, "did you mean 'model.veg.k'"),
    (["--config", "nosuchpreset"], 2, "unknown config preset"),
])
def test_bad_training_input_is_one_line(args, code, needle, tmp_path):
    result = runner.invoke(app, ["train", *args, "--output", str(tmp_path / "x"),
                                 "--max-steps", "1"])
    assert result.exit_code == code, result.output
    assert needle in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_wrong_or_corrupt_checkpoint_is_one_line(data_root, tmp_path):
    run = train(tiny_config(data_root, tmp_path / "run", 2), progress=False)
    result = runner.invoke(app, ["train", "--resume", "--output", str(run.run_dir),
                                 "--encoder", "swin-bert"])
    # Resuming with another encoder is a changed config: refused before anything is built.
    assert result.exit_code == 2, result.output
    assert "model.encoder.name ('tiny' -> 'swin-bert')" in result.output
    assert len(result.output.strip().splitlines()) == 1
    from vipa.checkpoint import check_encoder_matches
    from vipa.errors import CheckpointError

    with pytest.raises(CheckpointError, match="trained with encoder 'tiny', not 'swin-bert'"):
        check_encoder_matches(read_checkpoint(run.last), "swin-bert")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00" * 64)
    result = runner.invoke(app, ["eval", "--checkpoint", str(corrupt)])
    assert result.exit_code == 1 and "corrupt" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(("pretrained", "scale", "expected"),
                         [(False, None, 1e-3), (True, None, 1e-4), (False, 0.3, 3e-4),
                          (True, 0.5, 5e-4)])
def test_encoder_lr_scale_defaults_by_weights_and_applies_when_set(pretrained, scale, expected):
    cfg = resolve_config("cpu", {"encoder": "tiny", "preset": "micro"}, ["decoder.dim=16"])
    cfg.train.lr, cfg.train.encoder_lr_scale = 1e-3, scale
    model = build_model(cfg.model)
    model.encoder.pretrained = pretrained
    lrs = {g["name"]: g["lr"] for g in build_optimizer(model, cfg).param_groups}
    assert lrs["decoder"] == pytest.approx(1e-3)
    assert lrs["encoder"] == pytest.approx(expected)


def test_the_fused_adamw_steps_as_the_default_one():
    """CUDA weights get AdamW's fused kernel; on the CPU (where the recipe trains) it is
    off by default, and forced on it gives the same weights as the default kernel."""
    cfg = resolve_config("cpu", {"encoder": "tiny", "preset": "micro"}, ["decoder.dim=16"])
    weights = {}
    for fused in (None, True):
        torch.manual_seed(0)
        model = build_model(cfg.model)
        optimizer = build_optimizer(model, cfg, fused=fused)
        assert bool(optimizer.defaults["fused"]) is bool(fused)
        for step in range(3):
            torch.manual_seed(step)
            loss = sum((p * torch.randn_like(p)).sum() for p in model.parameters())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        weights[fused] = [p.detach().clone() for p in model.parameters()]
    for default, fused in zip(weights[None], weights[True], strict=True):
        torch.testing.assert_close(fused, default, rtol=1e-5, atol=1e-6)


def test_time_budget_parsing_and_schedule():
    from vipa.config.validate import parse_duration
    from vipa.errors import ConfigError
    from vipa.training.budget import TimeBudget, budget_schedule

    assert parse_duration("15m") == 900 and parse_duration("1h30m") == 5400
    assert parse_duration("14m45s") == 885 and parse_duration("90") == 90
    for bad in ("soon", "", "-3m", "0s"):
        with pytest.raises(ConfigError, match="time_budget"):
            parse_duration(bad)
    now = [0.0]
    budget = TimeBudget(100.0, validations=4, clock=lambda: now[0])
    factor = budget_schedule(budget, power=1.0, warmup=2)
    assert factor(0) == 0.5 and factor(1) == 1.0  # warm-up counts steps
    due = []
    for second in range(0, 101, 5):
        now[0] = float(second)
        if budget.validation_due():
            budget.validated += 1
            due.append(second)
    assert due == [25, 50, 75]  # the 4th validation is the final one, at the end
    budget.record_final_work(10.0)  # one validation + checkpoint takes 10 s: hold 12 s back
    now[0] = 44.0
    assert budget.progress() == pytest.approx(0.5) and factor(10) == pytest.approx(0.5)
    now[0] = 88.0
    assert budget.done()
    saved = budget.state_dict()
    resumed = TimeBudget(100.0, validations=4, clock=lambda: 1000.0)
    resumed.load_state_dict(saved)  # a resumed run goes on with what is left
    assert resumed.elapsed() == pytest.approx(88.0) and resumed.validated == 3


def test_time_budget_run_ends_on_time_with_its_validations(data_root, tmp_path, monkeypatch):
    from vipa.training.budget import TimeBudget

    # A clock that advances 0.01 s per reading: the run's course does not depend on how
    # busy the machine is (a real run reads time.monotonic).
    ticks = iter(range(10**9))
    monkeypatch.setattr(TimeBudget, "default_clock", staticmethod(lambda: next(ticks) / 100))
    cfg = tiny_config(data_root, tmp_path / "run", 100000, "train.time_budget=3s",
                      "train.budget_validations=3", "train.checkpoint_every=100000")
    result = train(cfg, progress=False)
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().split("\n")
               if x]
    vals = [r for r in records if "val" in r]
    lrs = [r["lr"] for r in records if "lr" in r]
    assert 10 < result.step < 100000  # ended by the budget, not the steps
    assert len(vals) == 3 and vals[-1]["step"] == result.step  # the last one at the end
    assert lrs[-1] < 0.3 * max(lrs)  # the schedule ran over the budget
    [state_file] = (tmp_path / "run").glob("last.state-*.pt")
    saved = torch.load(state_file, weights_only=True)
    assert 2.5 <= saved["budget"]["spent"] <= 3.5 and saved["budget"]["validated"] == 2
    # Resuming a run whose budget is spent trains no further step: the budget carries over.
    again = runner.invoke(app, ["train", "--resume", "--output", str(tmp_path / "run"),
                                "--no-progress"])
    assert again.exit_code == 0, again.output
    assert read_checkpoint(tmp_path / "run" / "last.safetensors").step == result.step


def test_a_finished_run_is_not_overwritten_without_overwrite(data_root, tmp_path):
    run = tmp_path / "r1"
    first = runner.invoke(app, ["train", *tiny_args(data_root, run, 4)])
    assert first.exit_code == 0, first.output
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    again = runner.invoke(app, ["train", *tiny_args(data_root, run, 2)])
    assert again.exit_code == 2
    message = again.output.strip()
    assert "holds a finished run: --resume to go on with it" in message
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    replaced = runner.invoke(app, ["train", *tiny_args(data_root, run, 2), "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert read_checkpoint(run / "last.safetensors").step == 2
    assert [p.name for p in run.glob("last.state-*.pt")] == ["last.state-2.pt"]
    losses = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in losses if "loss" in r] == [1, 2]  # the old log is gone
    assert not (run / ".vipa.lock").exists()  # a finished run leaves no lock behind


def test_checkpoints_and_model_folders_follow_the_umask(data_root, tmp_path):
    old = os.umask(0o022)
    try:
        result = train(tiny_config(data_root, tmp_path / "run", 2), progress=False)
        package = runner.invoke(app, ["package", str(result.best), str(tmp_path / "folder")])
    finally:
        os.umask(old)
    assert package.exit_code == 0, package.output
    for path in (result.best, result.last, tmp_path / "folder" / "model.safetensors",
                 tmp_path / "folder" / "config.json"):
        assert path.stat().st_mode & 0o777 == 0o644, path


def test_two_runs_with_one_seed_give_identical_metrics_and_weights(data_root, tmp_path):
    """The tokenizer is fitted (WordPiece from scratch) in each run: its vocabulary too."""
    runs = []
    for name in ("a", "b"):
        cfg = tiny_config(data_root, tmp_path / name, 6, "train.val_every=3")
        runs.append(train(cfg, progress=False))
    first, second = (read_checkpoint(r.best) for r in runs)
    assert first.tokenizer == second.tokenizer
    assert first.tensors.keys() == second.tensors.keys()
    for key, tensor in first.tensors.items():
        assert torch.equal(tensor, second.tensors[key]), key

    def records(run) -> list[dict]:  # noqa: ANN001
        lines = (run.run_dir / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k not in ("time", "samples_per_s")}
                for line in lines]

    assert records(runs[0]) == records(runs[1])
    assert [r["step"] for r in records(runs[0]) if "val" in r] == [3, 6]


def test_the_chosen_checkpoint_never_saw_its_reporting_splits(data_root, tmp_path):
    from vipa.data.build import build_dataset

    cfg = tiny_config(data_root, tmp_path / "run", 2)
    assert cfg.data.val_split == "minival"
    images = {split: {s.image_id for s in build_dataset(cfg, split, train=split == "train").items}
              for split in ("train", "minival", "val", "testA", "testB")}
    assert images["minival"], "a carved minival holds at least one image"
    assert not images["minival"] & images["train"]  # chosen on images it never trained on
    for split in ("val", "testA", "testB"):
        assert not images[split] & (images["minival"] | images["train"]), split
    result = train(cfg, progress=False)
    assert result.chosen_on == "minival"
    validated = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()
                 if '"val"' in x]
    assert validated[-1]["val"]["samples"] == min(
        cfg.data.max_val_samples, len(build_dataset(cfg, "minival", train=False).items))


def test_eval_reports_val_testa_and_testb_by_default(data_root, tmp_path):
    result = train(tiny_config(data_root, tmp_path / "run", 2), progress=False)
    out = runner.invoke(app, ["eval", "--checkpoint", str(result.best), "--data-root",
                              str(data_root), "--device", "cpu", "--no-progress",
                              "--output", str(tmp_path / "all.json")])
    assert out.exit_code == 0, out.output
    every = json.loads((tmp_path / "all.json").read_text())
    assert list(every) == ["val", "testA", "testB"]
    for split, metrics in every.items():
        assert metrics["split"] == split and metrics["samples"] > 0
        assert (result.run_dir / f"eval-synthetic-{split}.json").is_file()
    typo = runner.invoke(app, ["eval", "--checkpoint", str(result.best), "--data-root",
                               str(data_root), "--split", "testb", "--no-progress"])
    assert typo.exit_code == 2 and "did you mean 'testB'?" in typo.output


@pytest.mark.parametrize("encoder", ["tiny", "swin-bert"])
def test_phrases_padded_to_max_text_len_give_the_same_outputs(encoder):
    """train.text_padding=max (static shapes for torch.compile) changes no prediction."""
    cfg = resolve_config("cpu", {"encoder": encoder, "preset": "micro", "image_size": 64},
                         ["decoder.dim=16", "veg.k=4"])
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    texts = ["the red circle", "the small blue square on the left", "cross"]
    model.encoder.tokenizer.fit(texts)
    images = torch.rand(3, 3, 64, 64)
    outputs = {}
    for fixed in (False, True):
        ids, mask = model.encoder.tokenizer(texts, fixed)
        assert ids.shape[1] == (cfg.model.max_text_len if fixed else int(mask.sum(1).max()))
        with torch.no_grad():
            outputs[fixed] = model(images, ids, mask).logits
    torch.testing.assert_close(outputs[True], outputs[False], rtol=1e-4, atol=1e-4)


def test_the_loader_tokenizes_and_a_compiled_step_trains(data_root, tmp_path):
    """train.compile: the loader pads every batch to max_text_len, the step runs through
    torch.compile (aot_eager: dynamo and AOT autograd trace forward and backward; inductor's
    code generation takes minutes on 2 cores, bench.cuda runs it on a GPU), and the weights
    keep the model's own parameter names."""
    from vipa.training.distributed import DistInfo
    from vipa.training.session import Session

    cfg = tiny_config(data_root, tmp_path / "run", 1, "train.compile=true",
                      "train.compile_backend=aot_eager")
    session = Session(cfg, DistInfo(), tmp_path / "run", resume=False)
    group = [next(iter(session.loader))]
    ids, mask = session.model.encoder.tokenizer(group[0]["text"], True)
    assert group[0]["token_ids"].shape == (4, cfg.model.max_text_len)
    assert torch.equal(group[0]["token_ids"], ids)
    assert torch.equal(group[0]["attention_mask"], mask)
    before = {k: v.clone() for k, v in session.model.state_dict().items()}
    frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    losses = session.step(group)
    session.confirm_finite()
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > frames  # it compiled
    assert torch.isfinite(losses["loss"])
    after = session.model.state_dict()
    assert after.keys() == before.keys()  # no "_orig_mod." prefix in checkpoints
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_the_collate_pads_to_the_longest_unless_fixed_and_keeps_old_tokenizers_working():
    """TokenizingCollate: the batch's longest phrase by default (text_padding auto without
    compile), max_len when fixed; a plugin tokenizer whose ``arrays`` predates ``fixed``
    still tokenizes when nothing asks for fixed shapes."""
    from encoders.hashing import HashingTokenizer
    from vipa.data.dataset import TokenizingCollate

    class BeforeFixed(HashingTokenizer):
        def arrays(self, texts):  # noqa: ANN001, ANN201 - the one-argument signature
            return super().arrays(texts)

    batch = [{"text": t, "x": torch.zeros(1)} for t in ("a red circle", "the small blue one")]
    longest = TokenizingCollate(HashingTokenizer(max_len=12))(batch)
    assert longest["token_ids"].shape == (2, 4) and longest["attention_mask"].sum() == 7
    assert TokenizingCollate(HashingTokenizer(max_len=12), True)(batch)["token_ids"].shape == (
        2, 12)
    old = TokenizingCollate(BeforeFixed(max_len=12))(batch)
    assert torch.equal(old["token_ids"], longest["token_ids"])
    cfg = tiny_config(Path("unused"), Path("unused"), 1)
    assert cfg.train.text_padding == "auto" and not cfg.train.compile  # so: the longest


def test_expression_after_hides_the_expression_for_the_first_steps_only(data_root, tmp_path):
    """train.expression_after=2: the first two steps' pixels read the words alone, so no
    gradient reaches the expression; from the third step on they read it, and validation
    and checkpoints always see the decoder that reads it."""
    from vipa.errors import ConfigError
    from vipa.training.distributed import DistInfo
    from vipa.training.session import Session

    cfg = tiny_config(data_root, tmp_path / "run", 3, "train.expression_after=2",
                      "veg.fallback=true")
    session = Session(cfg, DistInfo(), tmp_path / "run", resume=False)
    seen, grads = [], []
    session.model.decoder.register_forward_pre_hook(
        lambda module, args: seen.append(module.hiding))
    session.model.veg.fallback_proj.weight.register_hook(
        lambda grad: grads.append(float(grad.abs().sum())))
    batches = iter(session.loader)
    for _ in range(3):
        session.step([next(batches)])
        assert session.model.decoder.hiding is False
    assert seen == [True, True, False]
    assert grads[:2] == [0.0, 0.0] and grads[2] > 0
    with pytest.raises(ConfigError, match="expression_after needs model.decoder.kv=both"):
        Session(tiny_config(data_root, tmp_path / "other", 3, "train.expression_after=2",
                            "decoder.kv=visual"), DistInfo(), tmp_path / "other", resume=False)
