"""Generalized RIS: gRefCOCO's layout and metrics; synthetic phrases matching several or none.

The gRefCOCO-format set here is written from the built-in synthetic set: every
object's own phrases (one target), one phrase per image naming two of its
objects (several), and one phrase per image that matches nothing (``[-1]``).
"""

from __future__ import annotations

import json
import math
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from vipa.checkpoint import load_model, save_checkpoint
from vipa.config import ModelConfig, apply_overrides
from vipa.data.refer import decode_segmentation, load_refs
from vipa.data.synthetic import DEFAULT, generate_synthetic, resolve, scene_of
from vipa.metrics import GRESMetrics
from vipa.model import VipaLoss, build_model
from vipa.model.losses import presence_loss
from vipa.training.trackers import scalars_of
from vipa_cli import app

runner = CliRunner()


def write_grefcoco(synthetic: Path, out: Path) -> Path:
    """``out/grefcoco``: grefs(unc).json, instances.json and images/ from a synthetic set."""
    source = synthetic / "synthetic"
    refs = pickle.loads((source / "refs(vipa).p").read_bytes())
    folder = out / "grefcoco"
    folder.mkdir(parents=True)
    shutil.copy(source / "instances.json", folder / "instances.json")
    shutil.copytree(source / "images", folder / "images")
    grefs, sent_id = [], 10_000
    by_image: dict[int, list[dict]] = {}
    for ref in refs:
        if ref["split"] == "reworded":
            continue
        by_image.setdefault(ref["image_id"], []).append(ref)
        grefs.append({**ref, "ann_id": [ref["ann_id"]], "category_id": [ref["category_id"]]})
    for image_id, image_refs in by_image.items():
        first = image_refs[0]
        sent_id += 2
        if len(image_refs) >= 2:
            second = image_refs[1]
            grefs.append({"ref_id": sent_id, "image_id": image_id, "split": first["split"],
                          "ann_id": [first["ann_id"], second["ann_id"]],
                          "category_id": [first["category_id"], second["category_id"]],
                          "sentences": [{"sent_id": sent_id, "sent": "both of them"}]})
        grefs.append({"ref_id": sent_id + 1, "image_id": image_id, "split": first["split"],
                      "ann_id": [-1], "category_id": [-1], "no_target": True,
                      "sentences": [{"sent_id": sent_id + 1, "sent": "the purple star"}]})
    (folder / "grefs(unc).json").write_text(json.dumps(grefs))
    return out


@pytest.fixture(scope="module")
def grefcoco(tmp_path_factory) -> Path:
    synthetic = generate_synthetic(tmp_path_factory.mktemp("synth"), seed=3, n_train=16,
                                   n_val=6, n_test=2, image_size=48)
    return write_grefcoco(synthetic, tmp_path_factory.mktemp("gref"))


def test_gres_metrics_follow_relas_definitions():
    gt = np.zeros((4, 4), bool)
    obj = gt.copy()
    obj[:2, :2] = True
    half = np.zeros((4, 4), bool)
    half[:2, :1] = True
    metrics = GRESMetrics()
    ious = metrics.update([half, gt, gt, obj], [obj, obj, gt, gt])
    # target found (IoU 0.5), target missed (0), none said none (1), none but painted (0)
    assert ious == [0.5, 0.0, 1.0, 0.0]
    result = metrics.compute()
    assert result["gIoU"] == pytest.approx(1.5 / 4)
    assert result["cIoU"] == pytest.approx(2 / (4 + 4 + 0 + 4))
    assert result["N-acc"] == 0.5 and result["T-acc"] == 0.5 and result["samples"] == 4
    assert GRESMetrics().compute()["N-acc"] is None  # no such samples: no number


def test_grefcoco_layout_loads_with_none_one_and_several_targets(grefcoco):
    index = load_refs(grefcoco, "grefcoco")
    index.image_dir = grefcoco / "grefcoco" / "images"
    samples = index.samples("val")
    counts = {s.target_count for s in samples}
    assert counts == {0, 1, 2}
    several = next(s for s in samples if s.target_count == 2)
    _, mask = index.load(several)
    union = index.mask(several.targets[0]) | index.mask(several.targets[1])
    assert np.array_equal(mask, union) and mask.sum() > index.mask(several.targets[0]).sum()
    nothing = next(s for s in samples if s.target_count == 0)
    assert index.load(nothing)[1].sum() == 0 and nothing.ann_id == -1
    stats = runner.invoke(app, ["data", "stats", "--data", "grefcoco", "--data-root",
                                str(grefcoco), "--json"])
    assert stats.exit_code == 0, stats.output
    val = json.loads(stats.stdout)["splits"]["val"]
    assert val["none-target sentences"] == val["images"] and val["multi-target sentences"] > 0
    checked = runner.invoke(app, ["data", "check", "--data", "grefcoco", "--data-root",
                                  str(grefcoco)])
    assert checked.exit_code == 0, checked.output


def test_convert_carries_none_and_several_referents_both_ways(grefcoco, tmp_path):
    """gRefCOCO -> a manifest with "masks" lists -> the refer layout with ann_id lists."""
    manifest = tmp_path / "manifest"
    result = runner.invoke(app, ["data", "convert", "--data", "grefcoco", "--data-root",
                                 str(grefcoco), "--image-dir", str(grefcoco / "grefcoco" /
                                                                   "images"), "--out",
                                 str(manifest)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (manifest / "val.jsonl").read_text().splitlines()]
    assert {len(r["masks"]) for r in records if "masks" in r} == {0, 1, 2}
    back = tmp_path / "back"
    result = runner.invoke(app, ["data", "convert", "--data", "jsonl", "--data-root",
                                 str(manifest), "--out", str(back)])
    assert result.exit_code == 0, result.output
    source = load_refs(grefcoco, "grefcoco")
    source.image_dir = grefcoco / "grefcoco" / "images"
    converted = load_refs(back, "refer")
    converted.image_dir = back / "refer" / "images"
    for split in ("train", "val"):
        before, after = source.samples(split), converted.samples(split)
        assert [(s.text, s.target_count) for s in before] == \
            [(s.text, s.target_count) for s in after]
        for old, new in zip(before, after, strict=True):
            assert np.array_equal(source.load(old)[1], converted.load(new)[1]), old.text
    for data, root in (("jsonl", manifest), ("refer", back)):
        stats = runner.invoke(app, ["data", "stats", "--data", data, "--data-root", str(root),
                                    "--json"])
        assert stats.exit_code == 0, stats.output
        assert json.loads(stats.stdout)["splits"]["val"]["none-target sentences"] > 0
        checked = runner.invoke(app, ["data", "check", "--data", data, "--data-root",
                                      str(root)])
        assert checked.exit_code == 0, checked.output


def test_a_manifest_masks_list_is_checked_per_object(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "empty.png")
    square = [[1, 1, 5, 1, 5, 5, 1, 5]]
    lines = [{"image": "a.png", "text": "both", "masks": [{"polygon": square},
                                                          {"mask": "empty.png"}]},
             {"image": "a.png", "text": "nothing here", "masks": []},
             {"image": "a.png", "text": "two kinds", "masks": [], "polygon": square},
             {"image": "a.png", "text": "no key", "masks": [{"box": [1, 2]}]}]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    checked = runner.invoke(app, ["data", "check", "--data", "jsonl", "--data-root",
                                  str(tmp_path)])
    assert checked.exit_code != 0
    assert "train.jsonl:1: masks[1] is empty" in checked.output
    assert "train.jsonl:2" not in checked.output  # no referent is a valid phrase
    assert 'train.jsonl:3: give "masks" (a list) or one of' in checked.output
    assert 'train.jsonl:4 masks[0]: needs exactly one of "mask"' in checked.output


def train_tiny(root: Path, run: Path, steps: int, *sets: str) -> Path:
    """A seconds-long `vipa train` of the tiny encoder on the gRefCOCO-format set."""
    trained = runner.invoke(app, [
        "train", "--encoder", "tiny", "--preset", "micro", "--fusion", "early", "--data",
        "grefcoco", "--data-root", str(root), "--image-size", "32", "--batch-size", "4",
        "--max-steps", str(steps), "--device", "cpu", "--output", str(run), "--no-progress",
        *(arg for s in ("veg.k=4", "decoder.dim=16", "train.warmup_steps=0",
                        "train.val_every=100", *sets) for arg in ("--set", s))])
    assert trained.exit_code == 0, trained.output
    return run


def _recomputed(grefcoco: Path, predictions: Path) -> dict[str, float]:
    """gIoU, cIoU, N-acc and T-acc from the saved PNGs and the annotation files alone."""
    folder = grefcoco / "grefcoco"
    instances = json.loads((folder / "instances.json").read_text())
    annotations = {a["id"]: a for a in instances["annotations"]}
    images = {i["id"]: i for i in instances["images"]}
    ious, inter, union, right, wrong, found, missed = [], 0, 0, 0, 0, 0, 0
    for ref in json.loads((folder / "grefs(unc).json").read_text()):
        if ref["split"] != "val":
            continue
        image = images[ref["image_id"]]
        gt = np.zeros((image["height"], image["width"]), bool)
        for ann_id in ref["ann_id"]:
            if ann_id != -1:
                gt |= decode_segmentation(annotations[ann_id]["segmentation"], image["height"],
                                          image["width"]).astype(bool)
        for sentence in ref["sentences"]:
            pred = np.asarray(Image.open(predictions / f"{sentence['sent_id']}.png")) > 0
            i, u = int((pred & gt).sum()), int((pred | gt).sum())
            inter, union = inter + i, union + u
            if gt.any():
                found, missed = found + pred.any(), missed + (not pred.any())
                ious.append(i / u)
            else:
                right, wrong = right + (not pred.any()), wrong + pred.any()
                ious.append(float(not pred.any()))
    return {"gIoU": float(np.mean(ious)), "cIoU": inter / union, "N-acc": right / (right + wrong),
            "T-acc": found / (found + missed)}


@pytest.mark.parametrize("threshold", ["0.5", "0.9"])
def test_eval_gres_metrics_equal_a_computation_from_the_saved_pngs(grefcoco, tmp_path,
                                                                    threshold):
    run = train_tiny(grefcoco, tmp_path / "run", 3)
    evaluated = runner.invoke(app, [
        "eval", "-c", str(run / "best.safetensors"), "--data", "grefcoco", "--data-root",
        str(grefcoco), "--split", "val", "--threshold", threshold, "--save-predictions",
        str(tmp_path / "png"), "-o", str(tmp_path / "metrics.json"), "--no-progress"])
    assert evaluated.exit_code == 0, evaluated.output
    assert "phrases matching none, one or several objects" in evaluated.output
    gres = json.loads((tmp_path / "metrics.json").read_text())["gres"]
    assert set(gres["kinds"]) == {"single", "multi", "none"}
    for name, value in _recomputed(grefcoco, tmp_path / "png").items():
        assert gres[name] == pytest.approx(value), name
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    final = scalars_of(next(r for r in reversed(logged) if "val" in r))  # its minival
    assert final["val/gres/none/samples"] >= 1 and 0 <= final["val/gres/gIoU"] <= 1


def test_the_gres_synthetic_set_adds_phrases_and_keeps_the_one_object_ones(tmp_path):
    sizes = {"seed": 5, "n_train": 60, "n_val": 30, "n_test": 6, "image_size": 64}
    plain = generate_synthetic(tmp_path / "plain", **sizes) / "synthetic"
    gres = generate_synthetic(tmp_path / "gres", style="gres", **sizes) / "synthetic-gres"
    refs = pickle.loads((gres / "refs(vipa).p").read_bytes())
    singles = [(r["split"], r["image_id"], s["sent"]) for r in refs
               if not isinstance(r["ann_id"], list) for s in r["sentences"]]
    assert singles == [(r["split"], r["image_id"], s["sent"])
                       for r in pickle.loads((plain / "refs(vipa).p").read_bytes())
                       for s in r["sentences"]]
    same = json.loads((plain / "instances.json").read_text())
    instances = json.loads((gres / "instances.json").read_text())
    assert all(same[key] == instances[key] for key in ("images", "annotations", "categories"))
    extra = [r for r in refs if isinstance(r["ann_id"], list)]
    share = len(extra) / len(refs)
    assert 0.15 < share < 0.35, share
    kinds = {"none": 0, "multi": 0}
    for ref in extra:
        scene = scene_of(instances, ref["image_id"])
        text = ref["sentences"][0]["sent"]
        if ref["ann_id"] == [-1]:
            kinds["none"] += 1  # worded like a one-object phrase, and it fits no object
            expression = DEFAULT.read(text) or DEFAULT.read(text, reworded=True)
            assert expression is not None and resolve(scene, expression) == [], text
        else:
            kinds["multi"] += 1
            assert len(ref["ann_id"]) >= 2, text
    assert kinds["none"] > 0 and kinds["multi"] > 0
    assert {r["split"] for r in extra} >= {"train", "val", "reworded"}
    stats = runner.invoke(app, ["data", "stats", "--data", "synthetic-gres", "--data-root",
                                str(tmp_path / "gres"), "--json"])
    assert stats.exit_code == 0, stats.output
    assert json.loads(stats.stdout)["splits"]["val"]["none-target sentences"] > 0


def _no_match_phrases(root: Path) -> list[tuple[str, object]]:
    """(sentence, scene) of every no-match phrase of a built-in generalized set."""
    folder = root / "synthetic-gres"
    instances = json.loads((folder / "instances.json").read_text())
    return [(r["sentences"][0]["sent"], scene_of(instances, r["image_id"]))
            for r in pickle.loads((folder / "refs(vipa).p").read_bytes())
            if r["ann_id"] == [-1]]


def test_absent_shape_makes_the_no_match_phrases_name_a_shape_the_scene_lacks(tmp_path):
    def lacks(text, scene):
        phrase = (DEFAULT.read(text) or DEFAULT.read(text, reworded=True)).phrase
        return phrase.shape not in {o.shape for o in scene.objects}

    sizes = ["--seed", "5", "--n-train", "60", "--n-val", "30", "--n-test", "6",
             "--image-size", "64", "--style", "gres"]
    made = runner.invoke(app, ["data", "synth", "-o", str(tmp_path / "all"), *sizes,
                               "--absent-shape", "1"])
    assert made.exit_code == 0, made.output
    default = generate_synthetic(tmp_path / "default", style="gres", seed=5, n_train=60,
                                 n_val=30, n_test=6, image_size=64)
    every = _no_match_phrases(tmp_path / "all")
    assert every and all(lacks(text, scene) for text, scene in every)
    before = [lacks(text, scene) for text, scene in _no_match_phrases(default)]
    assert not all(before)  # by default a scene's colour and shape never together come first
    refused = runner.invoke(app, ["data", "synth", "-o", str(tmp_path / "x"),
                                  "--absent-shape", "2"])
    assert refused.exit_code != 0 and "--absent-shape" in refused.output
    alone = runner.invoke(app, ["data", "synth", "-o", str(tmp_path / "y"), "--absent-shape",
                                "0.5"])  # the default style has no phrase matching nothing
    assert alone.exit_code != 0 and "--style gres" in alone.output
    assert not (tmp_path / "y").exists()


def test_a_heldout_set_in_grefcocos_layout_reads_as_grefcoco(tmp_path):
    """`vipa data synth --style heldout --layout grefcoco`: gRefCOCO's files, other words."""
    result = runner.invoke(app, ["data", "synth", "-o", str(tmp_path), "--style", "heldout",
                                 "--generalized", "0.3", "--layout", "grefcoco", "--seed", "3",
                                 "--n-train", "40", "--n-val", "20", "--n-test", "6",
                                 "--image-size", "64"])
    assert result.exit_code == 0, result.output
    assert "--data grefcoco" in result.output
    refs = json.loads((tmp_path / "grefcoco" / "grefs(unc).json").read_text())
    assert all(isinstance(r["ann_id"], list) and isinstance(r["category_id"], list)
               for r in refs)
    assert len(list((tmp_path / "images" / "train2014").glob("*.jpg"))) > 0
    index = load_refs(tmp_path, "grefcoco")
    assert {min(len(r["targets"]), 2) for r in index.refs} == {0, 1, 2}
    default_words = ("all the", "every", "both", "the two", " and the ")
    groups = [s["sent"] for r in refs if len(r["ann_id"]) > 1 for s in r["sentences"]]
    assert groups and not any(w in g for g in groups for w in default_words), groups
    assert not any(shape in s["sent"] for r in refs for s in r["sentences"]
                   for shape in DEFAULT.shapes)
    bad = runner.invoke(app, ["data", "synth", "-o", str(tmp_path / "x"), "--layout", "coco"])
    assert bad.exit_code != 0 and "unknown --layout 'coco'" in bad.output


@pytest.mark.parametrize("mode", ["relevance", "head", "cells"])
def test_the_presence_logit_trains_and_empties_the_mask_of_a_no_match(mode):
    config = apply_overrides(ModelConfig(), ["encoder.name=tiny", "encoder.preset=micro",
                                             "image_size=32", "veg.k=4", "decoder.dim=16",
                                             f"presence={mode}"])
    torch.manual_seed(0)
    model = build_model(config)
    model.encoder.tokenizer.fit(["the red circle", "the green star"])
    images, phrases = torch.rand(2, 3, 32, 32), ["the red circle", "the green star"]
    masks = torch.zeros(2, 1, 32, 32)
    masks[0, :, 4:12, 4:12] = 1  # the second phrase matches nothing
    output = model.train()(images, *model.tokenize(phrases))
    assert output.presence.shape == (2,)
    loss = VipaLoss(config.loss)(output, masks)
    assert loss.parts["presence"] > 0
    loss.total.backward()
    assert all(p.grad is not None for p in model.presence.parameters())
    last = model.presence.bias if mode == "relevance" else model.presence.mlp[-1].bias
    with torch.no_grad():
        last.fill_(-50.0)  # says "no match" for everything
    assert not model.predict(images, phrases, threshold=1e-6).masks.any()
    with torch.no_grad():
        last.fill_(50.0)
    assert torch.equal(model.predict(images, phrases).masks,
                       model.eval()(images, *model.tokenize(phrases)).logits.sigmoid() >= 0.5)


def test_presence_level_feeds_the_head_a_finer_stage():
    base = ["encoder.name=tiny", "encoder.preset=micro", "image_size=32", "veg.k=4",
            "decoder.dim=16", "presence=head"]
    coarsest = build_model(apply_overrides(ModelConfig(), base))
    assert coarsest.presence_index == len(coarsest.encoder.strides) - 1
    torch.manual_seed(0)
    model = build_model(apply_overrides(ModelConfig(), [*base, "presence_level=8"])).eval()
    index = model.presence_index
    assert model.encoder.strides[index] == 8 < model.encoder.strides[-1]
    assert model.presence.feature_proj.in_features == model.encoder.out_channels[index]
    model.encoder.tokenizer.fit(["the red circle"])
    images, (ids, mask) = torch.rand(1, 3, 32, 32), model.tokenize(["the red circle"])
    with torch.no_grad():
        text = model.encoder.encode_text(ids, mask)
        features = model.features(images, text, None)
        relevance = model.expression(features, text).relevance
        expected = model.presence(text.sentence, relevance, features[index])
        torch.testing.assert_close(model(images, ids, mask).presence, expected)


def test_the_balanced_presence_loss_weighs_both_kinds_of_phrase_alike():
    logits = torch.tensor([2.0, -1.0, 0.5, 3.0])
    masks = torch.zeros(4, 1, 4, 4)
    masks[[0, 2, 3], :, 1, 1] = 1  # three phrases with a referent, one without
    each = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, torch.tensor([1.0, 0.0, 1.0, 1.0]), reduction="none")
    plain, balanced = presence_loss(logits, masks), presence_loss(logits, masks, balance=True)
    torch.testing.assert_close(plain, each.mean())
    torch.testing.assert_close(balanced, (each[[0, 2, 3]].mean() + each[1]) / 2)
    one_kind = torch.ones(4, 1, 4, 4)  # every phrase has a referent: the plain mean
    torch.testing.assert_close(presence_loss(logits, one_kind, balance=True),
                               presence_loss(logits, one_kind))


def test_eval_with_presence_says_no_match_as_an_empty_mask(grefcoco, tmp_path):
    run = train_tiny(grefcoco, tmp_path / "run", 2, "model.presence=relevance",
                     "train.log_every=1")
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("presence" in record for record in logged)  # the loss term, logged
    model, _ = load_model(run / "best.safetensors", "cpu")
    with torch.no_grad():
        model.presence.bias.fill_(-50.0)  # "no match" for every phrase
    checkpoint = save_checkpoint(tmp_path / "none.safetensors", model)
    evaluated = runner.invoke(app, [
        "eval", "-c", str(checkpoint), "--data", "grefcoco", "--data-root", str(grefcoco),
        "--split", "val", "--no-progress", "-o", str(tmp_path / "m.json"), "--save-predictions",
        str(tmp_path / "png")])
    assert evaluated.exit_code == 0, evaluated.output
    gres = json.loads((tmp_path / "m.json").read_text())["gres"]
    assert gres["N-acc"] == 1.0 and gres["T-acc"] == 0.0
    assert gres["gIoU"] == pytest.approx(gres["kinds"]["none"]["samples"] / gres["samples"])
    assert not any(np.asarray(Image.open(png)).any() for png in (tmp_path / "png").iterdir())


def test_no_match_reaches_predict_onnx_and_the_python_api(tmp_path):
    """A model whose presence says "no match": `vipa predict` prints it, its --json record
    has "present": false and an empty mask, through the checkpoint and the ONNX export."""
    from vipa.inference.predict import segment
    from vipa.inference.runtime import TorchRuntime

    config = apply_overrides(ModelConfig(), ["encoder.name=tiny", "encoder.preset=micro",
                                             "image_size=32", "veg.k=4", "decoder.dim=16",
                                             "presence=relevance"])
    torch.manual_seed(0)
    model = build_model(config)
    model.encoder.tokenizer.fit(["the red circle", "the green star"])
    with torch.no_grad():
        model.presence.bias.fill_(-50.0)
    checkpoint = save_checkpoint(tmp_path / "m.safetensors", model)
    image = tmp_path / "scene.png"
    Image.fromarray((np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)
                    ).save(image)
    [found] = segment(TorchRuntime(model, "cpu"), np.asarray(Image.open(image)), ["the star"])
    assert not found.present and found.area == 0 and found.score < 1e-6
    assert "no match" in repr(found)
    exported = runner.invoke(app, ["export", "-c", str(checkpoint), "-o",
                                   str(tmp_path / "m.onnx")])
    assert exported.exit_code == 0 and "verified" in exported.output, exported.output
    sidecar = json.loads((tmp_path / "m.onnx.vipa.json").read_text())
    assert sidecar["sidecar_version"] == 4 and sidecar["outputs"][-1] == "presence"
    for source in (["-c", str(checkpoint)], ["--model", str(tmp_path / "m.onnx")]):
        shown = runner.invoke(app, ["predict", str(image), "the green star", *source,
                                    "--device", "cpu", "-o", str(tmp_path / "out")])
        assert shown.exit_code == 0 and "'the green star': no match" in shown.output, \
            shown.output
        listed = runner.invoke(app, ["predict", str(image), "the green star", *source,
                                     "--device", "cpu", "-o", str(tmp_path / "out"), "--json"])
        record = json.loads(listed.stdout)
        assert record["present"] is False and record["area"] == 0, record


def test_the_cells_read_out_scores_each_place_and_takes_the_best():
    """presence=cells: one strong cell decides, wherever it is; a pooled map could not
    tell one object holding both words from two objects holding one each."""
    from vipa.model.presence import Presence, soft_max_over_cells

    scores = torch.tensor([[0.0, 0.0, 0.0, 9.0], [9.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    pooled = soft_max_over_cells(scores)
    assert torch.allclose(pooled[0], pooled[1]) and pooled[0] > 7.5
    assert abs(float(pooled[2])) < 1e-6  # no cell stands out: the mean
    torch.manual_seed(0)
    head = Presence("cells", text_dim=6, feature_dim=5, tau=0.1, hidden=8).eval()
    sentence, feature = torch.randn(1, 6), torch.randn(1, 5, 3, 3)
    moved = feature.flatten(2).roll(4, dims=2).view_as(feature)  # the same cells, elsewhere
    relevance = torch.randn(1, 3, 3)
    with torch.no_grad():
        logit = head(sentence, relevance, feature)
        assert torch.allclose(logit, head(sentence, relevance, moved), atol=1e-6)
        assert torch.allclose(logit, head(sentence, relevance.neg(), feature))  # text + map
        cells = head.feature_proj(feature.flatten(2).transpose(1, 2))
        text = head.text_proj(sentence).unsqueeze(1).expand_as(cells)
        each = head.mlp(torch.cat((cells, text, cells * text), 2)).squeeze(2)
        assert torch.allclose(logit, each.logsumexp(1) - math.log(9))
