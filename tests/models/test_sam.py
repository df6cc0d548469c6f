"""SAM model on a tiny randomly initialised variant: the real code path of vit_h/l/b, seconds on a CPU.

Random weights give arbitrary masks, so these tests check structure and invariants (plus one run with all
thresholds at 0 so that masks do come out), not segmentation quality.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from affine import Affine
from segment_anything import SamAutomaticMaskGenerator, SamPredictor
from segment_anything.modeling.image_encoder import Attention
from segment_anything.utils.transforms import ResizeLongestSide

from geoseg.errors import SpecError
from geoseg.inputs.tiles import TileGrid
from geoseg.models import model_info
from geoseg.models.base import InstanceInfo, InstanceOutput, Prompts, SceneInfo, TileContext
from geoseg.models.sam.encoder import SdpaAttention, enable_sdpa, encode_tiles
from geoseg.models.sam.masks import MaskCandidate, paint_by_score, rle_decode, rle_encode
from geoseg.models.sam.model import SamModel, build_sam
from geoseg.models.sam.weights import load_sam
from geoseg.spec.job import SamSpec
from geoseg.testutils.tiny_sam import TINY_VARIANT, write_tiny_checkpoint

SIZE = 96  # read window side (tiny SAM resizes it to 128)
BANDS = ("red", "green", "blue")


def _spy(record: Callable[..., object], fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, calling ``record`` with the same arguments first (to count a patched method's calls)."""

    def spied(*args: Any, **kwargs: Any) -> Any:
        record(*args, **kwargs)
        return fn(*args, **kwargs)

    return spied


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("sam") / "vit_tiny.pth")


@pytest.fixture(scope="module")
def scene() -> SceneInfo:
    """Reflectance 0..0.5 uniformly over the scene: percentile p is at p / 200."""
    table = {band: np.linspace(0.0, 0.5, 101) for band in (*BANDS, "nir")}
    return SceneInfo((*BANDS, "nir"), "", (10.0, 10.0), 100.0, table)


def _spec(ckpt: Path, **kw: object) -> SamSpec:
    base: dict[str, object] = {"type": "sam", "variant": TINY_VARIANT, "checkpoint": str(ckpt), "points_per_side": 8}
    return SamSpec.model_validate({**base, **kw})


def _open_spec(ckpt: Path, **kw: object) -> SamSpec:
    """Automatic mode with every filter off, so that random weights still yield masks."""
    return _spec(ckpt, pred_iou_thresh=0.0, stability_score_thresh=0.0, **kw)


def _batch(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[TileContext]]:
    rng = np.random.default_rng(seed)
    pixels = (rng.random((n, 3, SIZE, SIZE), dtype=np.float32) * 0.5).astype(np.float32)
    pixels[:, :, 20:60, 30:70] = 0.4  # a bright "field"
    valid = np.ones((n, SIZE, SIZE), bool)
    grid = TileGrid(1000, 1000, SIZE - 16, 8)
    contexts = [TileContext(grid[0, i], Affine.identity()) for i in range(n)]
    return pixels, valid, contexts


def _check_output(out: InstanceOutput, valid: np.ndarray) -> None:
    assert out.labels.dtype == np.int32 and out.labels.shape == valid.shape
    labels = [info.label for info in out.instances]
    assert labels == list(range(1, len(labels) + 1))
    assert set(np.unique(out.labels)) - {0} == set(labels)
    assert not out.labels[~valid].any()
    scores = [info.score for info in out.instances]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)


# --------------------------------------------------------------------------------------------- build, load
def test_build_from_registry_entry(ckpt: Path, scene: SceneInfo) -> None:
    model = build_sam(_spec(ckpt, merge_min_agreement=0.3), scene, "cpu")
    assert isinstance(model, SamModel) and model.kind == "instance"
    assert model.bands == BANDS and model.merge_min_agreement == 0.3 and not model.needs_prompts
    assert all(isinstance(block.attn, SdpaAttention) for block in model.sam.image_encoder.blocks)
    assert model.dtype is None  # fp32 on CPU


def test_build_errors_say_what_to_change(ckpt: Path, scene: SceneInfo) -> None:
    with pytest.raises(SpecError, match="set `rgb:`"):
        build_sam(_spec(ckpt, rgb=("red", "green", "swir")), scene, "cpu")
    with pytest.raises(SpecError, match="unknown SAM variant 'vit_x'"):
        model_info(_spec(ckpt, variant="vit_x"))  # the plan's check: a spec alone reads no table
    if not torch.cuda.is_available():
        with pytest.raises(SpecError, match="gpus_per_actor"):
            build_sam(_spec(ckpt), scene, "cuda")


# --------------------------------------------------------------------------------------------- encoder
@pytest.mark.parametrize("window", [True, False])
def test_sdpa_attention_matches_segment_anything(window: bool) -> None:
    torch.manual_seed(0)
    grid = (4, 4) if window else (8, 6)
    reference = Attention(32, num_heads=2, use_rel_pos=True, input_size=grid).eval()
    with torch.no_grad():
        reference.rel_pos_h.normal_()
        reference.rel_pos_w.normal_()
    fast = copy.deepcopy(reference)
    fast.__class__ = SdpaAttention
    x = torch.randn(3, *grid, 32)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), reference(x), atol=1e-5, rtol=1e-4)


def test_batched_encoder_equals_predictor_per_tile(ckpt: Path) -> None:
    reference = SamPredictor(load_sam(TINY_VARIANT, ckpt))  # stock attention, one tile at a time
    fast = enable_sdpa(load_sam(TINY_VARIANT, ckpt))
    images = np.random.default_rng(1).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    features, input_size = encode_tiles(fast, images)
    assert features.shape[0] == 3
    assert input_size == ResizeLongestSide(128).get_preprocess_shape(SIZE, SIZE, 128)
    for image, feature in zip(images, features, strict=True):
        reference.set_image(image)
        torch.testing.assert_close(feature[None], reference.features, atol=1e-4, rtol=1e-4)


def test_one_encoder_call_per_batch_and_none_for_empty_tiles(
    ckpt: Path, scene: SceneInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = build_sam(_open_spec(ckpt), scene, "cpu")
    calls: list[int] = []
    forward = model.sam.image_encoder.forward
    monkeypatch.setattr(model.sam.image_encoder, "forward", _spy(lambda x: calls.append(len(x)), forward))
    pixels, valid, contexts = _batch(3)
    valid[1] = False  # outside the scene / AOI
    outputs = model.predict(pixels, valid, contexts)
    assert calls == [2]
    assert isinstance(outputs[1], InstanceOutput) and not outputs[1].instances and not outputs[1].labels.any()


# --------------------------------------------------------------------------------------------- stretch
def test_stretch_uses_scene_percentiles_not_tile_range(ckpt: Path, scene: SceneInfo) -> None:
    model = build_sam(_spec(ckpt, stretch_percentiles=(2.0, 98.0)), scene, "cpu")
    pixels, valid, _ = _batch(2)
    pixels[1] = pixels[0]  # same content ...
    pixels[0, :, :, 48:] = 5.0  # very bright right half in tile 0
    pixels[1, :, :, 48:] = -1.0  # ... but a very dark right half in tile 1
    images = model.to_uint8(pixels, valid)
    np.testing.assert_array_equal(images[0, :, :48], images[1, :, :48])
    # 2nd percentile (0.01) -> 0, 98th (0.49) -> 255, linear in between
    probe = np.array([0.01, 0.49, 0.25, 0.0, 1.0], np.float32)
    flat = np.broadcast_to(probe[None, None, None, :], (1, 3, 1, 5)).copy()
    out = model.to_uint8(flat, np.ones((1, 1, 5), bool))[0, 0, :, 0]
    assert out.tolist() == [0, 255, 128, 0, 255]
    valid[0, :10] = False
    assert not model.to_uint8(pixels, valid)[0, :10].any()


# --------------------------------------------------------------------------------------------- automatic
def test_automatic_mode_yields_sane_instances(ckpt: Path, scene: SceneInfo) -> None:
    model = build_sam(_open_spec(ckpt, box_nms_thresh=0.95), scene, "cpu")
    pixels, valid, contexts = _batch(2)
    valid[1, :, :30] = False
    outputs = model.predict(pixels, valid, contexts)
    assert len(outputs) == 2
    for out, mask in zip(outputs, valid, strict=True):
        assert isinstance(out, InstanceOutput)
        _check_output(out, mask)
        assert out.instances, "with all thresholds at 0 a random SAM still returns masks"
        assert all(info.key is None and info.stability is not None for info in out.instances)


def test_automatic_mode_prompts_only_valid_pixels(
    ckpt: Path, scene: SceneInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = build_sam(_open_spec(ckpt, points_per_batch=16), scene, "cpu")
    seen: list[torch.Tensor] = []
    decode = model._predictor.decode_points
    monkeypatch.setattr(model._predictor, "decode_points", _spy(seen.append, decode))
    pixels, valid, contexts = _batch(1)
    valid[0, :, : SIZE // 2] = False  # left half is nodata
    model.predict(pixels, valid, contexts)
    points = torch.cat(seen).numpy() * (SIZE / 128)  # back from the model's input frame to tile pixels
    assert len(points) == 32  # half of the 8 x 8 grid
    assert (points[:, 0] >= SIZE // 2).all()


def test_process_batch_equals_segment_anything(ckpt: Path, scene: SceneInfo) -> None:
    """Filtering by predicted IoU before upsampling and the one-transfer RLE change nothing."""
    model = build_sam(_spec(ckpt, stability_score_thresh=0.0), scene, "cpu")
    generator, predictor = model._generator, model._predictor
    assert generator is not None
    pixels, valid, _ = _batch(1)
    image = model.to_uint8(pixels, valid)[0]
    predictor.set_image(image)
    points = generator.point_grids[0] * SIZE
    _, iou = predictor.decode_points(torch.as_tensor(predictor.transform.apply_coords(points, (SIZE, SIZE))).float())
    generator.pred_iou_thresh = float(iou.median())  # let about half of the masks through
    args = (points, (SIZE, SIZE), [0, 0, SIZE, SIZE], (SIZE, SIZE))
    ours = generator._process_batch(*args)
    theirs = SamAutomaticMaskGenerator._process_batch(generator, *args)
    assert 0 < len(ours["rles"]) == len(theirs["rles"]) < len(points) * 3
    for key in ("iou_preds", "stability_score", "boxes", "points"):
        torch.testing.assert_close(ours[key], theirs[key].to(ours[key].dtype), rtol=1e-5, atol=1e-5)
    for a, b in zip(ours["rles"], theirs["rles"], strict=True):
        assert a["size"] == b["size"] and list(a["counts"]) == b["counts"]


def test_deeper_crop_layers_encode_their_crops(ckpt: Path, scene: SceneInfo, monkeypatch: pytest.MonkeyPatch) -> None:
    encoded: list[tuple[int, ...]] = []
    original = SamPredictor.set_torch_image

    def spy(self: SamPredictor, image: torch.Tensor, size: tuple[int, ...]) -> None:
        encoded.append(tuple(size))
        original(self, image, size)

    monkeypatch.setattr(SamPredictor, "set_torch_image", spy)
    model = build_sam(_open_spec(ckpt, crop_n_layers=1, min_mask_region_area=12), scene, "cpu")
    pixels, valid, contexts = _batch(1)
    (out,) = model.predict(pixels, valid, contexts)
    assert isinstance(out, InstanceOutput)
    _check_output(out, valid[0])
    assert len(encoded) == 4 and all(max(size) < SIZE for size in encoded)  # the full tile is never re-encoded


def test_area_limits_are_not_applied_to_tile_fragments(ckpt: Path, scene: SceneInfo) -> None:
    pixels, valid, contexts = _batch(1)
    plain = build_sam(_open_spec(ckpt), scene, "cpu").predict(pixels, valid, contexts)[0]
    limited = build_sam(_open_spec(ckpt, min_area_m2=1e9, max_area_m2=100.0), scene, "cpu")
    out = limited.predict(pixels, valid, contexts)[0]
    assert isinstance(plain, InstanceOutput) and isinstance(out, InstanceOutput) and plain.instances
    np.testing.assert_array_equal(out.labels, plain.labels)  # a tile keeps every fragment
    info = model_info(_open_spec(ckpt, min_area_m2=300.0, max_area_m2=1000.0))
    assert (info.min_area_m2, info.max_area_m2) == (300.0, 1000.0)


def test_area_limits_apply_to_whole_stitched_objects() -> None:
    """A field whose edge fragment is below the minimum stays whole; an object above the maximum as a whole is
    dropped although each of its fragments is below it."""
    from pyproj import CRS

    from geoseg.export.vectorize import objects_frame
    from geoseg.plan.outputs import Cleaning
    from geoseg.stitch.stitcher import LayerStitcher, tile_layer

    scene_labels = np.zeros((10, 20), np.int32)
    scene_labels[0:5, 8:20] = 1  # 60 px: 10 in the left tile, 50 in the right one
    scene_labels[6:10, 0:20] = 2  # 80 px: 40 + 40
    grid = TileGrid(20, 10, 10, 1)
    stitcher = LayerStitcher(grid, 0.5)
    padded = np.pad(scene_labels, 1)
    for tile in grid:
        r0, c0 = int(tile.read.row_off) + 1, int(tile.read.col_off) + 1
        window = padded[r0 : r0 + 12, c0 : c0 + 12]
        output = InstanceOutput(window.copy(), [InstanceInfo(1, 0.9), InstanceInfo(2, 0.9)])
        stitcher.add(tile, tile_layer(output, tile)[0])
    objects = stitcher.objects()
    crs = CRS.from_epsg(32633)
    frame = objects_frame(objects, Affine(1, 0, 0, 0, -1, 0), crs, Cleaning(min_area_m2=20, max_area_m2=70))
    assert list(frame["area_m2"]) == [60.0]


# --------------------------------------------------------------------------------------------- prompted
def test_prompted_mode_one_mask_per_prompt(ckpt: Path, scene: SceneInfo, monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_sam(_spec(ckpt, mode="prompted", prompts="fields.gpkg"), scene, "cpu")
    assert model.needs_prompts
    decoder_calls: list[int] = []
    predict_masks = model.sam.mask_decoder.predict_masks
    monkeypatch.setattr(
        model.sam.mask_decoder,
        "predict_masks",
        _spy(lambda **kw: decoder_calls.append(len(kw["sparse_prompt_embeddings"])), predict_masks),
    )
    prompts = Prompts(
        points=np.array([[40.5, 30.5], [80.5, 80.5]]),
        point_keys=("p1", "p2"),
        boxes=np.array([[30.0, 20.0, 70.0, 60.0]]),
        box_keys=("f9",),
        attrs={"p1": {"crop": "wheat"}, "f9": {"crop": "maize", "id": 9}},
    )
    pixels, valid, contexts = _batch(2)
    contexts = [TileContext(contexts[0].tile, contexts[0].transform, prompts), contexts[1]]
    first, second = model.predict(pixels, valid, contexts)
    assert decoder_calls == [3]  # all prompts of a tile in one call; no call for the tile without prompts
    assert isinstance(first, InstanceOutput) and isinstance(second, InstanceOutput)
    _check_output(first, valid[0])
    keys = [info.key for info in first.instances]
    assert keys and set(keys) <= {"p1", "p2", "f9"} and len(set(keys)) == len(keys)
    for info in first.instances:
        assert info.key is not None
        assert info.attrs == prompts.attrs.get(info.key, {})
    assert not second.instances and not second.labels.any()


def test_prompt_coordinates_reach_sam_in_its_pixel_convention(
    ckpt: Path, scene: SceneInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = build_sam(_spec(ckpt, mode="prompted", prompts="p.gpkg"), scene, "cpu")
    seen: dict[str, torch.Tensor] = {}
    encoder = model.sam.prompt_encoder
    forward = encoder.forward

    def spy(points: object, boxes: torch.Tensor | None, masks: object) -> object:
        if points is not None:
            seen["points"] = points[0].clone()  # type: ignore[index]
        if boxes is not None:
            seen["boxes"] = boxes.clone()
        return forward(points=points, boxes=boxes, masks=masks)

    monkeypatch.setattr(encoder, "forward", spy)
    prompts = Prompts(
        points=np.array([[10.5, 20.5]]), point_keys=("a",), boxes=np.array([[4.0, 6.0, 9.0, 12.0]]), box_keys=("b",)
    )
    pixels, valid, contexts = _batch(1)
    model.predict(pixels, valid, [TileContext(contexts[0].tile, contexts[0].transform, prompts)])
    scale = 128 / SIZE  # centre of pixel (row 20, col 10) -> SAM's integer index convention, resized
    np.testing.assert_allclose(seen["points"].numpy().reshape(-1), [10 * scale, 20 * scale], rtol=1e-6)
    np.testing.assert_allclose(seen["boxes"].numpy().reshape(-1), np.array([3.5, 5.5, 8.5, 11.5]) * scale, rtol=1e-6)


# --------------------------------------------------------------------------------------------- painting
def test_paint_by_score_higher_score_wins() -> None:
    valid = np.ones((6, 6), bool)
    valid[5] = False
    low = np.zeros((6, 6), bool)
    low[:, :4] = True
    high = np.zeros((6, 6), bool)
    high[:, 2:] = True
    tiny = np.zeros((6, 6), bool)
    tiny[0, 0] = True
    out = paint_by_score(
        [MaskCandidate(low, 0.5, key="low"), MaskCandidate(high, 0.9, key="high"), MaskCandidate(tiny, 0.99)],
        valid,
        min_px=2,
    )
    assert [(i.label, i.key) for i in out.instances] == [(1, "high"), (2, "low")]
    assert (out.labels[:5, 2:] == 1).all() and (out.labels[:5, :2] == 2).all() and not out.labels[5].any()


def test_rle_round_trip_matches_segment_anything() -> None:
    from segment_anything.utils.amg import mask_to_rle_pytorch, rle_to_mask

    masks = torch.from_numpy(np.random.default_rng(3).random((4, 7, 5)) > 0.5)
    masks[0] = False
    masks[1] = True
    ours, theirs = rle_encode(masks), mask_to_rle_pytorch(masks)
    for a, b, mask in zip(ours, theirs, masks, strict=True):
        assert a["size"] == b["size"] and list(a["counts"]) == b["counts"]
        np.testing.assert_array_equal(rle_decode(a), rle_to_mask(b))
        np.testing.assert_array_equal(rle_decode(a), mask.numpy())


# --------------------------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_matches_cpu_fp32(ckpt: Path, scene: SceneInfo) -> None:
    cpu = build_sam(_open_spec(ckpt), scene, "cpu")
    gpu = build_sam(_open_spec(ckpt), scene, "cuda")
    assert gpu.dtype == torch.bfloat16
    pixels, valid, contexts = _batch(2)
    images = cpu.to_uint8(pixels, valid)
    ref, _ = encode_tiles(cpu.sam, images)
    got, _ = encode_tiles(gpu.sam, images, gpu.dtype)
    assert float((got.float().cpu() - ref).norm() / ref.norm()) < 0.05  # bf16 + SDPA vs fp32
    for out, mask in zip(gpu.predict(pixels, valid, contexts), valid, strict=True):
        assert isinstance(out, InstanceOutput)
        _check_output(out, mask)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_prompted(ckpt: Path, scene: SceneInfo) -> None:
    model = build_sam(_spec(ckpt, mode="prompted", prompts="p.gpkg"), scene, "cuda")
    prompts = Prompts(
        points=np.array([[40.5, 30.5]]), point_keys=("a",), boxes=np.array([[30.0, 20.0, 70.0, 60.0]]), box_keys=("b",)
    )
    pixels, valid, contexts = _batch(1)
    (out,) = model.predict(pixels, valid, [TileContext(contexts[0].tile, contexts[0].transform, prompts)])
    assert isinstance(out, InstanceOutput)
    _check_output(out, valid[0])
