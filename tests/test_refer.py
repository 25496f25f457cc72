"""RefCOCO-format loading (tiny fixture built here), the restricted unpickler, and transforms."""

from __future__ import annotations

import colorsys
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from vipa.data.dataset import RISDataset, collate
from vipa.data.refer import load_refs
from vipa.data.safe_pickle import loads_plain
from vipa.data.transforms import (
    TrainAugment,
    colour_jitter,
    mentions_horizontal,
    swap_horizontal_words,
    swap_vertical_words,
)
from vipa.errors import ConfigError, DataError

H, W = 30, 40
IMAGE_NAME = "COCO_train2014_000000000007.jpg"


def _rect_mask(top: int, left: int, bottom: int, right: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[top:bottom, left:right] = 1
    return mask


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE written by hand: run lengths over the column-major pixels."""
    flat = mask.flatten(order="F")
    counts, value, run = [], 0, 0
    for pixel in flat:
        if pixel != value:
            counts.append(run)
            value, run = pixel, 0
        run += 1
    counts.append(run)
    return {"size": [H, W], "counts": [int(c) for c in counts]}


POLYGON_MASK = _rect_mask(5, 5, 15, 25)  # polygon x 5..25, y 5..15 covers these 200 pixels
RLE_MASK = _rect_mask(20, 30, 26, 36)
COMPRESSED_MASK = _rect_mask(2, 30, 8, 38)


def make_fixture(root: Path, image_subdir: str = "train2014") -> Path:
    """One JPEG, three annotations (polygon, uncompressed RLE, compressed RLE), three refs."""
    from pycocotools import mask as mask_utils

    image_folder = root / image_subdir
    image_folder.mkdir(parents=True)
    image = Image.new("RGB", (W, H), (240, 240, 240))
    ImageDraw.Draw(image).rectangle([5, 5, 24, 14], fill=(200, 30, 30))
    image.save(image_folder / IMAGE_NAME, quality=95)
    compressed = mask_utils.encode(np.asfortranarray(COMPRESSED_MASK))
    compressed["counts"] = compressed["counts"].decode("ascii")
    instances = {
        "images": [{"id": 7, "file_name": IMAGE_NAME, "height": H, "width": W}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "iscrowd": 0,
             "segmentation": [[5, 5, 25, 5, 25, 15, 5, 15]], "bbox": [5, 5, 20, 10], "area": 200},
            {"id": 2, "image_id": 7, "category_id": 4, "iscrowd": 1,
             "segmentation": _uncompressed_rle(RLE_MASK), "bbox": [30, 20, 6, 6], "area": 36},
            {"id": 3, "image_id": 7, "category_id": 4, "iscrowd": 1,
             "segmentation": compressed, "bbox": [30, 2, 8, 6], "area": 48},
        ],
        "categories": [{"id": 3, "name": "car"}, {"id": 4, "name": "box"}],
    }
    folder = root / "refcoco"
    folder.mkdir()
    (folder / "instances.json").write_text(json.dumps(instances))

    def ref(ref_id: int, ann_id: int, split: str, texts: list[str], first_sent: int) -> dict:
        sentences = [{"tokens": t.split(), "raw": t, "sent": t, "sent_id": first_sent + i}
                     for i, t in enumerate(texts)]
        return {"ref_id": ref_id, "ann_id": ann_id, "image_id": 7, "split": split,
                "category_id": instances["annotations"][ann_id - 1]["category_id"],
                "sentences": sentences, "sent_ids": [s["sent_id"] for s in sentences],
                # deliberately not the image's name: the loader must use instances.json
                "file_name": "COCO_train2014_000000000007_1.jpg"}

    refs = [ref(1, 1, "val", ["the red car", "car on the left"], 10),
            ref(2, 2, "testA", ["box bottom right"], 20),
            ref(3, 3, "testB", ["box top right"], 30)]
    with (folder / "refs(unc).p").open("wb") as handle:
        pickle.dump(refs, handle, protocol=2)
    return root


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return make_fixture(tmp_path / "data")


def test_loads_one_sample_per_sentence_with_the_polygon_mask(root: Path) -> None:
    ds = RISDataset(root, "refcoco", "val", image_size=32, keep_original=True)
    assert len(ds) == 2
    assert ds.texts() == ["the red car", "car on the left"]
    items = [ds[0], ds[1]]
    assert [it["sent_id"] for it in items] == [10, 11]
    for item in items:
        assert item["ref_id"] == 1 and item["image_id"] == 7
        assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
        assert item["image"].min() >= 0.0 and item["image"].max() <= 1.0
        assert item["mask"].shape == (1, 32, 32) and item["mask"].dtype == torch.float32
        assert set(item["mask"].unique().tolist()) == {0.0, 1.0}
        assert item["orig_size"].tolist() == [H, W] and item["orig_size"].dtype == torch.int64
        assert item["orig_mask"].dtype == torch.uint8
        assert int(item["orig_mask"].sum()) == 200
        assert np.array_equal(item["orig_mask"].numpy(), POLYGON_MASK)
    # The red rectangle was drawn where the mask is: the image matches the annotation.
    image = items[0]["image"]
    assert image[0][items[0]["mask"][0] > 0].mean() > 0.7
    assert image[1][items[0]["mask"][0] > 0].mean() < 0.3


def test_uncompressed_and_compressed_rle_masks(root: Path) -> None:
    index = load_refs(root, "refcoco")
    assert index.split_by == "unc"
    assert np.array_equal(index.mask(2), RLE_MASK)
    assert np.array_equal(index.mask(3), COMPRESSED_MASK)
    (sample_a,) = index.samples("testA")
    (sample_b,) = index.samples("testB")
    assert (sample_a.ann_id, sample_a.text, sample_a.category_id) == (2, "box bottom right", 4)
    assert sample_b.sent_id == 30
    assert sample_a.file_name == IMAGE_NAME  # from instances.json, not the ref
    assert index.stats() == {
        "val": {"images": 1, "refs": 1, "sentences": 2},
        "testA": {"images": 1, "refs": 1, "sentences": 1},
        "testB": {"images": 1, "refs": 1, "sentences": 1},
    }


def test_refer_api_layout_and_explicit_image_dir(tmp_path: Path) -> None:
    root = make_fixture(tmp_path / "a", image_subdir="images/mscoco/images/train2014")
    assert len(RISDataset(root, "refcoco", "testA", image_size=16)[0]["text"]) > 0
    elsewhere = make_fixture(tmp_path / "b", image_subdir="somewhere/else")
    with pytest.raises(DataError, match="no image directory"):
        RISDataset(elsewhere, "refcoco", "val")
    ds = RISDataset(elsewhere, "refcoco", "val", image_dir=elsewhere / "somewhere" / "else")
    assert ds[0]["image"].shape == (3, 128, 128)


def test_exif_orientation_is_applied(root: Path) -> None:
    # Store the picture rotated with an EXIF tag that turns it back to W x H.
    path = root / "train2014" / IMAGE_NAME
    picture = Image.open(path).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 270 degrees on display
    picture.save(path, exif=exif.tobytes(), quality=95)
    assert Image.open(path).size == (H, W)
    item = RISDataset(root, "refcoco", "val", keep_original=True)[0]
    assert item["orig_size"].tolist() == [H, W]


def test_collate_stacks_tensors_and_keeps_lists(root: Path) -> None:
    ds = RISDataset(root, "refcoco", "val", image_size=16, keep_original=True)
    batch = collate([ds[0], ds[1]])
    assert batch["image"].shape == (2, 3, 16, 16)
    assert batch["mask"].shape == (2, 1, 16, 16)
    assert batch["text"] == ["the red car", "car on the left"]
    assert batch["sent_id"].tolist() == [10, 11]
    assert batch["orig_size"].shape == (2, 2)
    assert isinstance(batch["orig_mask"], list) and batch["orig_mask"][0].shape == (H, W)


class _Remove:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return (os.remove, (self.path,))


def test_pickle_with_a_callable_is_refused(root: Path, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    canary.write_text("still here")
    refs_path = root / "refcoco" / "refs(unc).p"
    refs_path.write_bytes(pickle.dumps([{"evil": _Remove(str(canary))}], protocol=2))
    with pytest.raises(DataError) as info:
        load_refs(root, "refcoco")
    message = str(info.value)
    assert message.startswith(f"refusing to load {refs_path}: pickle references ")
    assert "remove" in message and "\n" not in message
    assert canary.exists()


def test_python2_protocol2_pickle_loads() -> None:
    # {'split': 'val', 'sent_id': 5} as Python 2 writes it: byte strings (SHORT_BINSTRING).
    data = b"\x80\x02}q\x00(U\x05splitq\x01U\x03valq\x02U\x07sent_idq\x03K\x05u."
    assert loads_plain(data) == {"split": "val", "sent_id": 5}


@pytest.mark.parametrize("what", ["pickle", "json", "image"])
@pytest.mark.parametrize("how", ["missing", "corrupt"])
def test_missing_or_corrupt_files_name_the_file(root: Path, what: str, how: str) -> None:
    path = {"pickle": root / "refcoco" / "refs(unc).p",
            "json": root / "refcoco" / "instances.json",
            "image": root / "train2014" / IMAGE_NAME}[what]
    if how == "missing":
        path.unlink()
    else:
        path.write_bytes(b"\x00\x01 this is not a " + what.encode() + b" \xff")
    with pytest.raises(DataError) as info:
        RISDataset(root, "refcoco", "val")[0]
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_dataset_split_and_split_by(root: Path) -> None:
    with pytest.raises(ConfigError, match="refcoco, refcoco\\+, refcocog, synthetic"):
        load_refs(root, "refcocoh")
    with pytest.raises(ConfigError, match="valid: unc$"):
        load_refs(root, "refcoco+", "umd")
    with pytest.raises(ConfigError, match="train, minival, val, testA, testB, test"):
        load_refs(root, "refcoco").samples("dev")
    with pytest.raises(ConfigError, match="present: val, testA, testB"):
        load_refs(root, "refcoco").samples("train")
    with pytest.raises(DataError, match="does not exist"):
        load_refs(root / "nope", "refcoco")


# -- transforms ---------------------------------------------------------------------------

def test_direction_words_swap_and_keep_case() -> None:
    assert swap_horizontal_words("the left dog") == "the right dog"
    assert swap_horizontal_words("Leftmost cup right of the man") == \
        "Rightmost cup left of the man"
    assert swap_horizontal_words("the leftover cake") == "the leftover cake"
    assert swap_vertical_words("cat on top, above the bottom shelf, upper") == \
        "cat on bottom, below the top shelf, lower"
    assert mentions_horizontal("guy on LEFT") and not mentions_horizontal("the bright one")


def _asymmetric() -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.zeros(3, 8, 8)
    image[0, :, :2] = 1.0  # red stripe on the left
    mask = torch.zeros(1, 8, 8)
    mask[0, :, :2] = 1.0
    return image, mask


def test_flip_with_left_right_text_swaps_the_words() -> None:
    image, mask = _asymmetric()
    augment = TrainAugment(hflip_p=1.0, swap_words=True, brightness=0, contrast=0,
                           saturation=0)
    out, out_mask, text = augment(image, mask, "the leftmost thing, left of the cat",
                                  torch.Generator().manual_seed(0))
    assert torch.equal(out_mask, mask.flip(-1)) and out[0, 0, -1] == 1.0
    assert text == "the rightmost thing, right of the cat"


def test_no_flip_for_left_right_text_when_words_are_not_swapped() -> None:
    image, mask = _asymmetric()
    augment = TrainAugment(hflip_p=1.0, swap_words=False, brightness=0, contrast=0,
                           saturation=0)
    for seed in range(20):
        out, out_mask, text = augment(image, mask, "the left one",
                                      torch.Generator().manual_seed(seed))
        assert torch.equal(out_mask, mask) and text == "the left one"
    out, out_mask, text = augment(image, mask, "the red one", torch.Generator().manual_seed(0))
    assert torch.equal(out_mask, mask.flip(-1)) and text == "the red one"


def test_random_flips_always_come_with_swapped_words() -> None:
    image, mask = _asymmetric()
    augment = TrainAugment(hflip_p=0.5, vflip_p=0.5, swap_words=True)
    flips = 0
    for seed in range(40):
        _, out_mask, text = augment(image, mask, "the left box at the top",
                                    torch.Generator().manual_seed(seed))
        flipped = bool(out_mask[0, 0, -1] == 1.0)
        flips += flipped
        assert ("right" in text) == flipped
        # a vertical flip of this mask changes nothing, but the words must still follow
        assert ("bottom" in text) != ("top" in text)
    assert 5 < flips < 35
    a = augment(image, mask, "left", torch.Generator().manual_seed(3))
    b = augment(image, mask, "left", torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and a[2] == b[2]


def test_colour_jitter_keeps_hue() -> None:
    colours = torch.tensor([[0.85, 0.15, 0.15], [0.15, 0.6, 0.25], [0.15, 0.3, 0.85],
                            [0.9, 0.8, 0.1], [0.55, 0.25, 0.7]])
    image = colours.T[:, :, None].repeat(1, 1, 4)  # (3, 5, 4)
    for factors in [(1.15, 0.85, 1.1), (0.85, 1.15, 0.9)]:
        out = colour_jitter(image, *factors)
        for k in range(len(colours)):
            before = colorsys.rgb_to_hsv(*image[:, k, 0].tolist())[0]
            after = colorsys.rgb_to_hsv(*out[:, k, 0].tolist())[0]
            gap = abs(before - after)
            assert min(gap, 1 - gap) < 0.01  # hue is an angle: 0.0 and 0.999 are close


def test_training_items_are_deterministic_by_seed(root: Path) -> None:
    a = RISDataset(root, "refcoco", "val", image_size=16, train=True, seed=1)
    b = RISDataset(root, "refcoco", "val", image_size=16, train=True, seed=1)
    for i in range(len(a)):
        assert torch.equal(a[i]["image"], b[i]["image"]) and a[i]["text"] == b[i]["text"]
