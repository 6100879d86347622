"""Box coding (R-CNN's dx, dy, dw, dh), box clipping and batched IoU, against torchvision and
hand-derived values."""

import math

import pytest
import torch
import torchvision
from torchvision.models.detection._utils import BoxCoder as TorchvisionBoxCoder

from maskrcnn.modeling.rpn import batch_iou
from maskrcnn.ops import BoxCoder, clip_boxes
from maskrcnn.ops.box_coder import DEFAULT_SCALE_CLAMP

# The RPN's, the box head's, and distinct weights that catch a weight applied to the wrong coordinate.
WEIGHTS = [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (2.0, 3.0, 4.0, 0.5)]


def random_boxes(generator: torch.Generator, count: int, dtype=torch.float32) -> torch.Tensor:
    """(count, 4) xyxy boxes with width and height between 5 and 300 pixels.

    Any two differ in size by less than 1000 / 16 = 62.5 times, so decoding never reaches the clamp.
    """
    corner = torch.rand(count, 2, generator=generator, dtype=dtype) * 600 - 50
    size = 5 + torch.rand(count, 2, generator=generator, dtype=dtype) * 295
    return torch.cat((corner, corner + size), dim=1)


@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_encode_decode_round_trip(weights, dtype):
    generator = torch.Generator().manual_seed(0)
    boxes = random_boxes(generator, 200, dtype)
    references = random_boxes(generator, 200, dtype)
    coder = BoxCoder(weights)
    deltas = coder.encode(boxes, references)
    assert deltas.shape == (200, 4)
    decoded = coder.decode(deltas, references)
    assert decoded.shape == (200, 1, 4)
    tolerance = 1e-3 if dtype == torch.float32 else 1e-9
    torch.testing.assert_close(decoded[:, 0], boxes, rtol=0, atol=tolerance)


def test_encode_by_hand():
    """Reference (0, 0, 10, 20) -> box (5, 10, 25, 30): centre (5, 10) -> (15, 20), size (10, 20) -> 20."""
    references = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    boxes = torch.tensor([[5.0, 10.0, 25.0, 30.0]])
    deltas = BoxCoder((10.0, 10.0, 5.0, 5.0)).encode(boxes, references)
    expected = torch.tensor([[10 * 10 / 10, 10 * 10 / 20, 5 * math.log(2.0), 5 * math.log(1.0)]])
    torch.testing.assert_close(deltas, expected, rtol=1e-6, atol=1e-6)
    # Decoding a zero delta gives the reference back.
    decoded = BoxCoder((10.0, 10.0, 5.0, 5.0)).decode(torch.zeros(1, 4), references)
    torch.testing.assert_close(decoded, references[:, None], rtol=0, atol=0)


@pytest.mark.parametrize("weights", WEIGHTS)
def test_encode_equals_torchvision(weights):
    generator = torch.Generator().manual_seed(1)
    boxes = random_boxes(generator, 100)
    references = random_boxes(generator, 100)
    ours = BoxCoder(weights).encode(boxes, references)
    # torchvision: encode_single(target boxes, proposals) gives the deltas turning proposals into targets.
    reference = TorchvisionBoxCoder(weights).encode_single(boxes, references)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("num_classes", [1, 2, 5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_decode_equals_torchvision(weights, num_classes, dtype):
    generator = torch.Generator().manual_seed(num_classes)
    references = random_boxes(generator, 64, dtype)
    # Scaled by the weights so that the decoded boxes move and resize by O(1) of the reference.
    scale = torch.tensor(weights, dtype=dtype).repeat(num_classes)
    deltas = torch.randn(64, 4 * num_classes, generator=generator, dtype=dtype) * scale
    ours = BoxCoder(weights).decode(deltas, references)
    reference = TorchvisionBoxCoder(weights).decode_single(deltas, references)
    assert reference.shape == (64, 4 * num_classes)
    assert ours.shape == (64, num_classes, 4)
    assert ours.dtype == dtype
    torch.testing.assert_close(ours, reference.reshape(64, num_classes, 4), rtol=1e-6, atol=1e-4)


def test_class_specific_deltas_decode_each_class_independently():
    generator = torch.Generator().manual_seed(3)
    references = random_boxes(generator, 10)
    deltas = torch.randn(10, 4 * 3, generator=generator)
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    decoded = coder.decode(deltas, references)
    for c in range(3):
        alone = coder.decode(deltas[:, 4 * c : 4 * c + 4], references)
        torch.testing.assert_close(decoded[:, c : c + 1], alone, rtol=0, atol=0)


def test_decode_casts_references_to_the_deltas_dtype():
    generator = torch.Generator().manual_seed(4)
    references = random_boxes(generator, 5, torch.float64)
    deltas = torch.randn(5, 4, generator=generator)
    assert BoxCoder((1.0, 1.0, 1.0, 1.0)).decode(deltas, references).dtype == torch.float32


@pytest.mark.parametrize("weights", WEIGHTS)
def test_huge_deltas_are_clamped_and_stay_finite(weights):
    references = torch.tensor([[10.0, 20.0, 26.0, 52.0], [0.0, 0.0, 100.0, 50.0]])
    deltas = torch.tensor([[0.0, 0.0, 1e4, 1e4], [0.0, 0.0, 80.0, 1e30]])
    ours = BoxCoder(weights).decode(deltas, references)
    assert torch.isfinite(ours).all()
    # The log-size deltas are clamped at log(1000 / 16): the box grows at most 62.5 times, about its centre.
    widths = ours[:, 0, 2] - ours[:, 0, 0]
    heights = ours[:, 0, 3] - ours[:, 0, 1]
    torch.testing.assert_close(widths, torch.tensor([16.0, 100.0]) * 62.5, rtol=1e-5, atol=0)
    torch.testing.assert_close(heights, torch.tensor([32.0, 50.0]) * 62.5, rtol=1e-5, atol=0)
    centres = (ours[:, 0, :2] + ours[:, 0, 2:]) / 2
    torch.testing.assert_close(centres, torch.tensor([[18.0, 36.0], [50.0, 25.0]]), rtol=0, atol=1e-3)
    reference = TorchvisionBoxCoder(weights).decode_single(deltas, references)
    torch.testing.assert_close(ours.reshape(2, 4), reference, rtol=1e-6, atol=1e-3)


def test_clamp_value_and_custom_clamp():
    assert DEFAULT_SCALE_CLAMP == pytest.approx(math.log(1000.0 / 16))
    references = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    # Below the clamp a delta is used as is: exp(2) times the size.
    decoded = BoxCoder((1.0, 1.0, 1.0, 1.0)).decode(torch.tensor([[0.0, 0.0, 2.0, 2.0]]), references)
    torch.testing.assert_close(decoded[0, 0, 2] - decoded[0, 0, 0], torch.tensor(10 * math.exp(2.0)))
    # A custom clamp of log(2) caps the growth at 2x.
    coder = BoxCoder((1.0, 1.0, 1.0, 1.0), scale_clamp=math.log(2.0))
    decoded = coder.decode(torch.tensor([[0.0, 0.0, 5.0, 5.0]]), references)
    torch.testing.assert_close(decoded[0, 0], torch.tensor([-5.0, -5.0, 15.0, 15.0]))


def test_very_negative_size_deltas_shrink_without_clamping():
    """Only growth is clamped; a large negative delta shrinks the box towards its centre (as torchvision)."""
    references = torch.tensor([[0.0, 0.0, 40.0, 20.0]])
    deltas = torch.tensor([[0.0, 0.0, -10.0, -50.0]])
    ours = BoxCoder((1.0, 1.0, 1.0, 1.0)).decode(deltas, references)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours[0, 0, 2] - ours[0, 0, 0], torch.tensor(40 * math.exp(-10.0)))
    reference = TorchvisionBoxCoder((1.0, 1.0, 1.0, 1.0)).decode_single(deltas, references)
    torch.testing.assert_close(ours.reshape(1, 4), reference, rtol=0, atol=1e-6)


def test_empty_inputs():
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    assert coder.encode(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)
    assert coder.decode(torch.zeros(0, 8), torch.zeros(0, 4)).shape == (0, 2, 4)


# Box clipping (areas, IoU and small-box removal are torchvision.ops')


def tensor_size(image_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(height, width) as 0-dim int64 tensors, as a traced model's sizes are."""
    return torch.tensor(image_size[0]), torch.tensor(image_size[1])


@pytest.mark.parametrize("image_size", [(100, 200), (300, 50), (64, 64)])
def test_clip_boxes_equals_torchvision(image_size):
    generator = torch.Generator().manual_seed(6)
    boxes = torch.rand(80, 4, generator=generator) * 500 - 150
    ours = clip_boxes(boxes, image_size)
    reference = torchvision.ops.clip_boxes_to_image(boxes, image_size)
    torch.testing.assert_close(ours, reference, rtol=0, atol=0)
    # Class-specific boxes (N, C, 4) are clipped the same way.
    per_class = boxes.reshape(20, 4, 4)
    torch.testing.assert_close(
        clip_boxes(per_class, image_size),
        torchvision.ops.clip_boxes_to_image(per_class, image_size),
        rtol=0,
        atol=0,
    )


def test_clip_boxes_by_hand():
    """image_size is (height, width): x is clipped to the width, y to the height."""
    boxes = torch.tensor([[-5.0, -5.0, 500.0, 500.0], [10.0, 20.0, 30.0, 40.0]])
    clipped = clip_boxes(boxes, (100, 200))
    assert clipped.tolist() == [[0.0, 0.0, 200.0, 100.0], [10.0, 20.0, 30.0, 40.0]]
    assert clip_boxes(boxes, tensor_size((100, 200))).tolist() == clipped.tolist()


# Boxes that each type holds but whose extents an image can exceed: int8 and uint8 boxes against
# an image over 127 or 255 pixels, int16 against 70000, float16 against one beyond 65504.
NARROW_BOXES = {
    torch.int8: [[-100, -120, 110, 127], [-128, -128, 127, 127], [0, 0, 50, 60], [-20, -10, 90, 100]],
    torch.uint8: [[0, 0, 255, 255], [5, 10, 250, 200], [100, 100, 180, 255], [20, 0, 255, 90]],
    torch.int16: [
        [0, 0, 30000, 30000],
        [-30000, -20000, 10000, 32767],
        [500, 600, 20000, 25000],
        [0, 0, 9, 7],
    ],
    torch.float16: [
        [0, 0, 1000, 1000],
        [100, 200, 900, 1100],
        [-2000, -1000, 60000, 30000],
        [0.5, 0, 300, 400],
    ],
}


def narrow_boxes(dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(NARROW_BOXES[dtype], dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8, torch.int16, torch.float16])
@pytest.mark.parametrize("image_size", [(800, 1333), (100, 120), (70000, 70000)])
def test_clip_boxes_of_narrow_types_to_an_image_beyond_their_range(dtype, image_size):
    """An image bound the type cannot hold clips nothing the type can hold; a smaller one clips as usual."""
    boxes = narrow_boxes(dtype)
    clipped = clip_boxes(boxes, image_size)
    assert clipped.dtype == dtype
    expected = torchvision.ops.clip_boxes_to_image(boxes.double(), image_size).to(dtype)
    assert torch.equal(clipped, expected)


@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float64, torch.int64, torch.int8, torch.uint8, torch.int16, torch.float16]
)
@pytest.mark.parametrize("image_size", [(800, 1333), (100, 120), (70000, 70000)])
def test_clip_boxes_to_0_dim_tensor_sizes_equals_int_sizes(dtype, image_size):
    """A traced size is a 0-dim int64 tensor: it clips as the int does, in the boxes' own type."""
    if dtype in NARROW_BOXES:
        boxes = narrow_boxes(dtype)
    else:
        generator = torch.Generator().manual_seed(8)
        boxes = (torch.rand(40, 4, generator=generator, dtype=torch.float64) * 3000 - 500).to(dtype)
    expected = clip_boxes(boxes, image_size)
    clipped = clip_boxes(boxes, tensor_size(image_size))
    assert clipped.dtype == expected.dtype == dtype
    assert torch.equal(clipped, expected)
    if image_size == (100, 120):
        assert not torch.equal(clipped, boxes), "the boxes should reach past the image"
    per_class = clip_boxes(boxes.reshape(-1, 2, 4), tensor_size(image_size))
    assert torch.equal(per_class, expected.reshape(-1, 2, 4))


def test_batch_iou_equals_torchvision_per_image():
    """(N, G, 4) ground truth against (A, 4) anchors -> (N, G, A), each image as box_iou gives it."""
    generator = torch.Generator().manual_seed(9)
    gt = random_boxes(generator, 3 * 5).reshape(3, 5, 4)
    anchors = random_boxes(generator, 40)
    iou = batch_iou(gt, anchors)
    assert iou.shape == (3, 5, 40)
    assert ((iou > 0) & (iou < 1)).sum() >= 10, "the boxes should partly overlap"
    for image in range(3):
        torch.testing.assert_close(iou[image], torchvision.ops.box_iou(gt[image], anchors), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.int8, torch.float16])
def test_clipping_and_batched_iou_of_zero_boxes(dtype):
    none, some = torch.zeros((0, 4), dtype=dtype), torch.tensor([[0, 0, 4, 5], [1, 1, 3, 3]], dtype=dtype)
    assert clip_boxes(none, (10, 20)).shape == (0, 4)
    assert clip_boxes(none.reshape(0, 3, 4), (10, 20)).shape == (0, 3, 4)
    assert clip_boxes(none, tensor_size((10, 20))).shape == (0, 4)
    # Batched IoU of images without ground truth, and against no anchors.
    floats = some.float()
    assert batch_iou(none.float().reshape(3, 0, 4), floats).shape == (3, 0, 2)
    assert batch_iou(floats[None], none.float()).shape == (1, 2, 0)
